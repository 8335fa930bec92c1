"""Reports over HTTP (spec §8): history exports to create, the reports folder to list and download,
and each task's Excel report and delivery funnel chart."""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from api.errors import ApiError, documented
from api.inputs import MAX_ID, Id
from models.db import session_scope
from models.params import HistoryFilter
from models.settings import get_settings
from models.tables import NotificationTask
from tasks.reporting.funnel import funnel_svg
from tasks.reporting.history import export_history, list_reports

router = APIRouter(tags=["reports"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_XLSX_RESPONSE = {200: {"content": {XLSX: {}}, "description": "The Excel workbook."}}


class HistoryExportIn(HistoryFilter):
    """Which messages the history export holds; every field may be left out (the current month, all messages)."""

    task_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="Only this notification task.")
    phone: str | None = Field(default=None, max_length=32, description="Only recipients whose number contains these digits.")

    model_config = {"json_schema_extra": {"examples": [{"since": "2026-11-01", "until": "2026-11-30", "channel": "sms", "group": "delivered"}]}}


class ReportFile(BaseModel):
    name: str = Field(examples=["history_2026-11-01_2026-11-30_channel-sms.xlsx"])
    url: str = Field(description="Download it here (with the token).", examples=["/v1/reports/history_2026-11-01_2026-11-30_channel-sms.xlsx"])
    bytes: int = Field(examples=[48213])
    modified: datetime = Field(examples=["2026-11-30T21:00:00+00:00"])


class HistoryReport(ReportFile):
    messages: int = Field(description="Messages in the export.", examples=[1520])
    since: date = Field(examples=["2026-11-01"])
    until: date = Field(examples=["2026-11-30"])


def report_file(path: str) -> dict[str, Any]:
    from pathlib import Path

    file = Path(path)
    stat = file.stat()
    return {"name": file.name, "url": f"/v1/reports/{file.name}", "bytes": stat.st_size,
            "modified": datetime.fromtimestamp(stat.st_mtime, UTC)}


@router.post("/reports", status_code=201, response_model=HistoryReport, summary="Export the message history",
             responses=documented(413, 422))
def create_history_report(filters: HistoryExportIn) -> dict[str, Any]:
    """Write the history of a period (by default from the first of this month to today), filtered, to an Excel
    file in the reports folder, as `notiflow history` does; download it from its `url`."""
    try:
        result = export_history(HistoryFilter.model_validate(filters.model_dump()))
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    return report_file(result.path) | {"messages": result.messages, "since": result.since, "until": result.until}


@router.get("/reports", response_model=list[ReportFile], summary="List the reports")
def list_report_files() -> list[dict[str, Any]]:
    """Task reports, history exports and phone-check exports, newest first."""
    return [{"name": r["name"], "url": f"/v1/reports/{r['name']}", "bytes": r["bytes"], "modified": r["modified"]} for r in list_reports()]


@router.get("/reports/{name}", response_class=FileResponse, summary="Download a report",
            responses={**_XLSX_RESPONSE, **documented(404)})
def download_report(name: str) -> FileResponse:
    """A file of the reports folder, as GET /v1/reports lists them."""
    folder = get_settings().reports_dir.resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file() or path.suffix != ".xlsx":
        raise ApiError(404, "not_found", f"no report {name!r}; GET /v1/reports lists them")
    return FileResponse(path, filename=name, media_type=XLSX)


@router.get("/tasks/{task_id}/report.xlsx", response_class=FileResponse, summary="Download a task's Excel report",
            responses={**_XLSX_RESPONSE, **documented(404, 422)})
def task_report(task_id: Id) -> FileResponse:
    """The task's Excel report, as the run's summary links it."""
    with session_scope() as session:
        task = session.get(NotificationTask, task_id)
    if task is None or not task.report_path:
        raise ApiError(404, "not_found", f"notification task {task_id} has no report yet; it is written when the run ends")
    return FileResponse(task.report_path, filename=f"notification-task-{task_id}.xlsx", media_type=XLSX)


@router.get("/tasks/{task_id}/funnel.svg", response_class=Response, summary="A task's delivery funnel chart",
            responses={200: {"content": {"image/svg+xml": {}}, "description": "An SVG chart."}, **documented(404, 422)})
def task_funnel(task_id: Id) -> Response:
    """The delivery funnel chart the run's summary artifact shows."""
    try:
        svg = funnel_svg(task_id)
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})
