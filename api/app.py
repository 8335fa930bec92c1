"""notiflow's HTTP service: health and delivery-report webhooks (the send API and short links come later)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Body, FastAPI, HTTPException

from models.db import get_engine, session_scope
from providers.base import ProviderRejected
from providers.sandbox.adapter import SandboxSMS
from tasks.track import apply_reports

@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    get_engine()  # migrate before the first webhook writes
    yield


app = FastAPI(title="notiflow", summary="Multichannel notification campaigns on Prefect", lifespan=_lifespan)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/webhooks/sandbox")
def sandbox_reports(payload: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
    """Delivery reports pushed by the sandbox carrier; polling stays the safety net."""
    try:
        reports = SandboxSMS.parse_webhook(payload)
    except (ProviderRejected, ValueError) as exc:
        raise HTTPException(status_code=422, detail=f"not a sandbox delivery report: {exc}") from exc
    with session_scope() as session:
        applied = apply_reports(session, SandboxSMS.name, reports, "webhook")
    return {"received": len(reports), "applied": applied}
