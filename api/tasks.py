"""Notification tasks over HTTP (spec §3): upload a task file to start one, list, show, pause, resume, cancel.

Every task is a run of the notification-task deployment, however it is started, so the UI's Suspend
and Cancel and these routes act on the same flow run.
"""
from __future__ import annotations

import shutil
import time
import uuid
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from api.errors import ApiError, documented
from api.inputs import MAX_ID, Id, PlainText
from deployments.control import cancel, pause, resume
from deployments.runs import start_run, ui_url
from models.db import session_scope
from models.errors import NotiflowError, TaskFileError, TaskNotFound
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.status import Channel, TaskState
from tasks.intake import task_file
from tasks.intake.task_file import TASK_FILE_SUFFIXES
from tasks.reporting.counts import status_counts
from tasks.schedule.windows import parse_windows
from tasks.reporting.task_list import TaskCategory, TaskFilter, task_list

router = APIRouter(prefix="/tasks", tags=["notification tasks"])

# Uploads the API keeps for runs to copy: the run copies the file when it starts, so a day later it is only litter.
UPLOAD_KEEP_SECONDS = 24 * 3600


class TaskStarted(BaseModel):
    flow_run_id: str = Field(description="The notification-task deployment run; the task appears in GET /v1/tasks?flow_run_id= once it starts.",
                             examples=["0b6f6a4e-3c1d-4d0e-9f5c-2f1f3e7d9a10"])
    flow_run_name: str = Field(description="The run's name: the task name.", examples=["november promo"])
    ui_url: str = Field(description="The run in the Prefect UI.", examples=["http://127.0.0.1:4200/runs/flow-run/0b6f6a4e-3c1d-4d0e-9f5c-2f1f3e7d9a10"])


class TaskSummary(BaseModel):
    id: int = Field(examples=[7])
    name: str = Field(examples=["november promo"])
    state: TaskState = Field(examples=[TaskState.IN_PROGRESS])
    state_description: str = Field(examples=[""])
    created_at: str = Field(description="ISO 8601, UTC.", examples=["2026-11-26T09:00:00+00:00"])
    finished_at: str | None = Field(examples=[None])
    accepted: int = Field(description="Rows accepted from the file.", examples=[980])
    rejected: int = Field(description="Rows rejected (the report lists why).", examples=[20])
    sent: int = Field(description="Messages handed to a provider.", examples=[950])
    delivered: int = Field(examples=[900])
    report_url: str | None = Field(description="The Excel report, once the run wrote it.", examples=["/v1/tasks/7/report.xlsx"])
    flow_run_id: str | None = Field(examples=["0b6f6a4e-3c1d-4d0e-9f5c-2f1f3e7d9a10"])
    ui_url: str | None = Field(examples=["http://127.0.0.1:4200/runs/flow-run/0b6f6a4e-3c1d-4d0e-9f5c-2f1f3e7d9a10"])


class Task(TaskSummary):
    counts: dict[str, int] = Field(description="Messages per status.", examples=[{"DELIVERED": 900, "PENDING": 50, "QUEUED": 30}])


class TaskPage(BaseModel):
    items: list[TaskSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.", examples=["41"])


class ControlResult(BaseModel):
    task_id: int = Field(examples=[7])
    result: str = Field(examples=["task 7 paused: 120 unsent messages held; resume with `notiflow resume 7`"])


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    report = f"/v1/tasks/{row['id']}/report.xlsx" if row.get("report") else None
    return {k: v for k, v in row.items() if k != "report"} | {
        "report_url": report, "ui_url": ui_url(row["flow_run_id"]) if row.get("flow_run_id") else None}


_UPLOAD_FORM = {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The task file: .xlsx, .xls or .csv."},
        "name": {"type": "string", "description": "Task name; empty: the file's name."},
        "windows": {"type": "array", "items": {"type": "string", "pattern": r"^\d\d:\d\d-\d\d:\d\d$"},
                    "description": 'Sending windows "HH:MM-HH:MM" (repeat the field for several).'},
        "channels": {"type": "array", "items": {"type": "string", "enum": [c.value for c in Channel]},
                     "description": "Default channel order for rows without a channel column."},
        "dry_run": {"type": "boolean", "description": "Validate and plan only: store and report, send nothing."},
    },
}


@router.post(
    "", status_code=201, response_model=TaskStarted, summary="Start a notification task",
    responses=documented(413, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": _UPLOAD_FORM, "encoding": {"windows": {"style": "form", "explode": True}}},
        "application/json": {"schema": {"$ref": "#/components/schemas/NotificationTaskParams"},
                             "example": {"task_file": "https://files.example.com/november.xlsx", "name": "november promo",
                                         "windows": ["09:00-20:00"]}},
    }}},
)
async def start_task(request: Request) -> TaskStarted:
    """Upload a task file (multipart: `file` and the task's parameters as form fields), or name one by JSON
    (`task_file`: a public http(s) URL or a file of the server's upload folder), and start it as a run of the
    notification-task deployment, as the CLI and the UI do. The file is read by the run; its rows'
    problems are in the task's report, not in this answer."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        params = await _uploaded_task(request)
    elif content_type.startswith("application/json") or not content_type:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(422, "invalid_request", "the body is not JSON; send the task's parameters as a JSON object") from exc
        params = _params(body)
        try:
            task_file.check_source(params.task_file)
        except TaskFileError as exc:
            raise ApiError(422, "task_file_refused", str(exc)) from exc
    else:
        raise ApiError(415, "unsupported_media_type", "send the task file as multipart/form-data, or its address as application/json")
    try:
        run = await run_in_threadpool(start_run, params)
    except NotiflowError as exc:
        raise ApiError(503, "unavailable", str(exc)) from exc
    return TaskStarted(flow_run_id=str(run.id), flow_run_name=run.name, ui_url=ui_url(run.id))


def _params(data: Any) -> NotificationTaskParams:
    if not isinstance(data, dict):
        raise RequestValidationError([{"loc": ("body",), "msg": "the body must be a JSON object", "type": "model_attributes_type"}])
    if data.get("task_id") is not None:
        raise RequestValidationError([{"loc": ("body", "task_id"), "msg": "a new task cannot continue another; "
                                       "resume that one with POST /v1/tasks/{id}/resume", "type": "value_error"}])
    try:
        params = NotificationTaskParams.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([e | {"loc": ("body", *e["loc"])} for e in exc.errors()]) from exc
    try:
        if params.windows:
            parse_windows(params.windows)
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("body", "windows"), "msg": str(exc), "type": "value_error"}]) from exc
    return params


async def _uploaded_task(request: Request) -> NotificationTaskParams:
    form = await request.form(max_files=1, max_fields=100)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise RequestValidationError([{"loc": ("body", "file"), "msg": "attach the task file as the form field `file`", "type": "missing"}])
    name = Path(upload.filename.replace("\\", "/")).name
    suffix = Path(name).suffix.lower()
    if suffix not in TASK_FILE_SUFFIXES:
        raise RequestValidationError([{"loc": ("body", "file"), "type": "value_error",
                                       "msg": f"a task file is {', '.join(sorted(TASK_FILE_SUFFIXES))}; download a template from GET /v1/task-templates"}])
    dry_run = str(form.get("dry_run") or "false").lower()
    if dry_run not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
        raise RequestValidationError([{"loc": ("body", "dry_run"), "msg": "true or false", "type": "bool_parsing"}])
    data: dict[str, Any] = {
        "task_file": "uploaded", "name": str(form.get("name") or ""), "windows": [str(w) for w in form.getlist("windows") if w],
        "dry_run": dry_run in ("true", "1", "on", "yes"),
    }
    if channels := [str(c) for c in form.getlist("channels") if c]:
        data["channels"] = channels
    checked = _params(data)  # refused before anything is written
    stored = await run_in_threadpool(_keep_upload, upload, name)
    return checked.model_copy(update={"task_file": str(stored), "name": checked.name or Path(name).stem})


def _keep_upload(upload: UploadFile, name: str) -> Path:
    """The upload as a file of the upload folder (0600, in a folder of its own), where the run reads it."""
    folder = get_settings().uploads_dir.resolve() / "api"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _sweep(folder)
    holder = folder / uuid.uuid4().hex
    holder.mkdir(mode=0o700)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or f"task{Path(name).suffix}"
    target = holder / safe
    upload.file.seek(0)
    with target.open("xb") as out:
        target.chmod(0o600)
        shutil.copyfileobj(upload.file, out)
    return target


def _sweep(folder: Path) -> None:
    """Delete the uploads of runs started more than a day ago (each run keeps its own copy)."""
    cutoff = time.time() - UPLOAD_KEEP_SECONDS
    for holder in folder.iterdir():
        try:
            if holder.is_dir() and holder.stat().st_mtime < cutoff:
                shutil.rmtree(holder, ignore_errors=True)
        except OSError:
            continue


@router.get("", response_model=TaskPage, summary="List notification tasks", responses=documented(422))
def list_tasks(
    category: Annotated[TaskCategory | None, Query(description='The task list\'s category: "in progress", "created" '
                                                    '(scheduled too), "paused", "completed" (cancelled and failed too).')] = None,
    state: Annotated[TaskState | None, Query(description="Exactly this state.")] = None,
    search: Annotated[PlainText | None, Query(max_length=255, description="The task id, or any part of its name.")] = None,
    since: Annotated[date | None, Query(description="Created on or after this day (account time zone).")] = None,
    until: Annotated[date | None, Query(description="Created on or before this day.")] = None,
    flow_run_id: Annotated[PlainText | None, Query(max_length=36, description="The task of this flow run (as POST /v1/tasks answered).")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,10}$", description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Tasks per page.")] = 50,
) -> dict[str, Any]:
    """Tasks newest first, filtered as the spec's task list filters them, a page at a time."""
    filters = TaskFilter(state=state.value if state else None, category=category, search=search, since=since, until=until,
                         flow_run_id=flow_run_id)
    # A cursor past the id column's range names no task: clamped, so the database never sees it.
    rows = task_list(filters, before_id=min(int(cursor), MAX_ID) if cursor else None, limit=limit + 1)
    page = rows[:limit]
    return {"items": [_summary(r) for r in page], "next_cursor": str(page[-1]["id"]) if len(rows) > limit else None}


@router.get("/{task_id}", response_model=Task, summary="Show a notification task", responses=documented(404, 422))
def read_task(task_id: Id) -> dict[str, Any]:
    """A task's state, progress and message counts per status."""
    rows = task_list(TaskFilter(task_id=task_id))
    if not rows:
        raise ApiError(404, "not_found", f"notification task {task_id} does not exist; GET /v1/tasks lists them")
    with session_scope() as session:
        counts = status_counts(session, task_id)
    return _summary(rows[0]) | {"counts": counts}


@contextmanager
def _controlling(task_id: int, action: str) -> Any:
    try:
        yield
    except TaskNotFound as exc:
        raise ApiError(404, "not_found", f"notification task {task_id} does not exist; GET /v1/tasks lists them") from exc
    except NotiflowError as exc:
        raise ApiError(409, f"cannot_{action}", str(exc)) from exc
    except httpx.HTTPError as exc:
        raise ApiError(503, "unavailable", f"the Prefect server is not answering ({type(exc).__name__}); "
                       "start it with `notiflow server` and try again") from exc


_CONTROL_ERRORS = documented(404, 409, 422, 503)


@router.post("/{task_id}/pause", response_model=ControlResult, summary="Pause a notification task", responses=_CONTROL_ERRORS)
def pause_task(task_id: Id) -> ControlResult:
    """Suspend the task's run (the UI's Suspend): unsent messages are held until it is resumed or cancelled."""
    with _controlling(task_id, "pause"):
        return ControlResult(task_id=task_id, result=pause(str(task_id)))


@router.post("/{task_id}/resume", response_model=ControlResult, summary="Resume a paused notification task", responses=_CONTROL_ERRORS)
def resume_task(task_id: Id) -> ControlResult:
    """Resume the task's suspended run: it continues where it stopped, sending nothing twice."""
    with _controlling(task_id, "resume"):
        return ControlResult(task_id=task_id, result=resume(str(task_id)))


@router.post("/{task_id}/cancel", response_model=ControlResult, summary="Cancel a notification task", responses=_CONTROL_ERRORS)
def cancel_task(task_id: Id) -> ControlResult:
    """Cancel the task's run (the UI's Cancel): every message not yet handed to a provider becomes CANCELED."""
    with _controlling(task_id, "cancel"):
        return ControlResult(task_id=task_id, result=cancel(str(task_id)))
