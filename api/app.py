"""notiflow's HTTP service: health and delivery-report webhooks (the send API and short links come later)."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request

from models.db import get_engine, session_scope
from providers.base import ProviderRejected
from providers.sandbox.adapter import SandboxSMS
from tasks.track import apply_reports

app = FastAPI(title="notiflow", summary="Multichannel notification campaigns on Prefect")


@app.on_event("startup")
def _migrate() -> None:
    get_engine()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/webhooks/sandbox")
async def sandbox_reports(request: Request) -> dict[str, Any]:
    """Delivery reports pushed by the sandbox carrier; polling stays the safety net."""
    try:
        reports = SandboxSMS.parse_webhook(SandboxSMS.__new__(SandboxSMS), await request.json())
    except (ProviderRejected, ValueError) as exc:
        raise HTTPException(status_code=422, detail=f"not a sandbox delivery report: {exc}") from exc
    with session_scope() as session:
        applied = apply_reports(session, SandboxSMS.name, reports, "webhook")
    return {"received": len(reports), "applied": applied}
