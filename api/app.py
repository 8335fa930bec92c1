"""notiflow's HTTP service: health and delivery-report webhooks (the send API and short links come later)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import FileResponse, Response

from models.db import get_engine, session_scope
from models.settings import get_settings
from models.tables import NotificationTask
from providers.base import ProviderRejected
from providers.sandbox.adapter import SandboxSMS
from tasks.funnel import funnel_svg
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


@app.get("/tasks/{task_id}/funnel.svg")
def task_funnel(task_id: int) -> Response:
    """The delivery funnel chart the run's summary artifact shows."""
    try:
        svg = funnel_svg(task_id)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})


@app.get("/tasks/{task_id}/report.xlsx")
def task_report(task_id: int) -> FileResponse:
    """The task's Excel report, as the run's summary links it."""
    with session_scope() as session:
        task = session.get(NotificationTask, task_id)
    if task is None or not task.report_path:
        raise HTTPException(status_code=404, detail=f"notification task {task_id} has no report yet; it is written when the run ends")
    return FileResponse(task.report_path, filename=f"notification-task-{task_id}.xlsx",
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@app.get("/reports/{name}")
def report_file(name: str) -> FileResponse:
    """A file of the reports folder (task reports and history exports), as `notiflow reports` lists them."""
    folder = get_settings().reports_dir.resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file() or path.suffix != ".xlsx":
        raise HTTPException(status_code=404, detail=f"no report {name!r}; list them with `notiflow reports`")
    return FileResponse(path, filename=name, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
