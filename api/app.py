"""notiflow's HTTP service: start and control notification tasks, delivery-report webhooks, report downloads."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import update
from starlette.middleware.trustedhost import TrustedHostMiddleware

from api.auth import require_token, require_webhook_secret, trusted_hosts
from api.templates import router as templates_router
from deployments.control import cancel, pause, resume
from deployments.runs import start_run, ui_url
from models.db import get_engine, session_scope
from models.errors import NotiflowError, TaskFileError, TaskNotFound
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.tables import NotificationTask, ShortLink
from providers.base import Provider, ProviderRejected, StatusReport
from providers.registry import UnknownProvider, provider_named
from tasks.delivery.opens import count_open
from tasks.delivery.track import apply_reports, unknown_ids
from tasks.intake import task_file
from tasks.reporting.counts import status_counts
from tasks.reporting.funnel import funnel_svg


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    get_engine()  # migrate before the first webhook writes
    yield


# The schema is served only with a token (below), and no docs page that would fetch it without one.
app = FastAPI(title="notiflow", summary="Multichannel notification campaigns on Prefect", lifespan=_lifespan,
              openapi_url=None, docs_url=None, redoc_url=None)
app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts())
# Every route is on one of these two: `protected` needs a token, `public` is what strangers may reach.
protected = APIRouter(dependencies=[Depends(require_token)])
public = APIRouter()


@protected.get("/openapi.json", include_in_schema=False)
def openapi_schema() -> dict[str, Any]:
    return app.openapi()


@public.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@public.post("/webhooks/{instance}", dependencies=[Depends(require_webhook_secret)])
def provider_reports(instance: str, payload: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
    """Delivery reports pushed by a provider instance (its own route, its own secret); polling stays the safety net."""
    provider, reports = _parse_reports(instance, payload)
    with session_scope() as session:
        applied = apply_reports(session, provider.name, reports, "webhook")
    return {"received": len(reports), "applied": applied}


@public.get("/webhooks/{instance}/dlr", dependencies=[Depends(require_webhook_secret)])
def provider_report_in_query(instance: str, request: Request) -> dict[str, Any]:
    """A delivery report fetched as a GET whose query is the report (Kannel's dlr-url, with our message reference).

    A report of a message not known yet (it overtook the dispatcher's record of the send) is answered 404 and
    not applied: the provider asks again later (Kannel: smsbox's http-request-retry and http-queue-delay)."""
    payload = {key: value for key, value in request.query_params.items() if key != "secret"}
    provider, reports = _parse_reports(instance, payload)
    with session_scope() as session:
        # Asked before applying: a message recorded in between is then applied, never answered 200 unapplied.
        unknown = unknown_ids(session, provider.name, [r.provider_message_id for r in reports])
        applied = apply_reports(session, provider.name, [r for r in reports if r.provider_message_id not in unknown], "webhook")
    if unknown:
        raise HTTPException(status_code=404, detail=f"no {instance} message {sorted(unknown)[0]!r} (yet): ask again later")
    return {"received": len(reports), "applied": applied}


def _parse_reports(instance: str, payload: Any) -> tuple[Provider, list[StatusReport]]:
    try:
        provider = provider_named(instance)
    except UnknownProvider as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    try:
        return provider, provider.parse_webhook(payload)
    except (ProviderRejected, ValueError) as exc:
        raise HTTPException(status_code=422, detail=f"not a {instance} delivery report: {exc}") from exc


@protected.get("/tasks/{task_id}/funnel.svg")
def task_funnel(task_id: int) -> Response:
    """The delivery funnel chart the run's summary artifact shows."""
    try:
        svg = funnel_svg(task_id)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})


@protected.get("/tasks/{task_id}/report.xlsx")
def task_report(task_id: int) -> FileResponse:
    """The task's Excel report, as the run's summary links it."""
    with session_scope() as session:
        task = session.get(NotificationTask, task_id)
    if task is None or not task.report_path:
        raise HTTPException(status_code=404, detail=f"notification task {task_id} has no report yet; it is written when the run ends")
    return FileResponse(task.report_path, filename=f"notification-task-{task_id}.xlsx",
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@protected.get("/reports/{name}")
def report_file(name: str) -> FileResponse:
    """A file of the reports folder (task reports and history exports), as `notiflow reports` lists them."""
    folder = get_settings().reports_dir.resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file() or path.suffix != ".xlsx":
        raise HTTPException(status_code=404, detail=f"no report {name!r}; list them with `notiflow reports`")
    return FileResponse(path, filename=name, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@protected.get("/task-templates")
def task_templates() -> list[dict[str, Any]]:
    """The downloadable Excel task templates, with where to get each."""
    from tasks.intake.task_templates import TASK_TEMPLATES

    return [{"title": t.title, "purpose": t.purpose, "file": t.file, "url": f"/task-templates/{t.file}", "columns": list(t.columns)}
            for t in TASK_TEMPLATES]


@protected.get("/task-templates/{file}")
def task_template(file: str) -> Response:
    """One Excel task template: its columns, an example row, and a sheet describing each column."""
    from tasks.intake.task_templates import BY_FILE, workbook_bytes

    template = BY_FILE.get(file)
    if template is None:
        raise HTTPException(status_code=404, detail=f"no task template {file!r}; GET /task-templates lists them")
    return Response(workbook_bytes(template), media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{file}"'})


@protected.post("/tasks", status_code=201)
def start_task(params: NotificationTaskParams) -> dict[str, Any]:
    """Start a notification task as a run of the notification-task deployment (as the CLI and the UI do)."""
    try:
        task_file.check_source(params.task_file)
    except TaskFileError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    try:
        run = start_run(params)
    except NotiflowError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return {"flow_run_id": str(run.id), "ui_url": ui_url(run.id)}


@protected.get("/tasks/{task_id}")
def read_task(task_id: int) -> dict[str, Any]:
    """A task's state and message counts per status."""
    with session_scope() as session:
        task = session.get(NotificationTask, task_id)
        if task is None:
            raise HTTPException(status_code=404, detail=f"notification task {task_id} does not exist")
        counts = status_counts(session, task_id)
    return {"id": task.id, "name": task.name, "state": task.state, "state_description": task.state_description,
            "accepted": task.accepted, "rejected": task.rejected, "counts": counts, "report": task.report_path,
            "flow_run_id": task.flow_run_id, "ui_url": ui_url(task.flow_run_id) if task.flow_run_id else None}


@protected.post("/tasks/{task_id}/{action}")
def control_task(task_id: int, action: str) -> dict[str, str]:
    """Pause, resume or cancel a task through its flow run, as the UI's buttons do."""
    actions = {"pause": pause, "resume": resume, "cancel": cancel}
    if action not in actions:
        raise HTTPException(status_code=404, detail=f"unknown action {action!r}; use pause, resume or cancel")
    try:
        return {"result": actions[action](str(task_id))}
    except TaskNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except NotiflowError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


@public.get("/s/{code}")
def follow_short_link(code: str) -> RedirectResponse:
    """A recipient opened a short link: count the click on its message, send them on to the real URL."""
    with session_scope() as session:
        url = session.scalar(
            update(ShortLink).where(ShortLink.code == code).values(clicks=ShortLink.clicks + 1).returning(ShortLink.url)
        )
    if url is None:
        raise HTTPException(status_code=404, detail="this short link does not exist")
    return RedirectResponse(url, status_code=302)


# A transparent 1×1 GIF: the smallest image every mail client shows without a complaint.
PIXEL = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


@public.get("/o/{token}.gif")
def email_opened(token: str) -> Response:
    """A mail client showed an e-mail's open-tracking pixel: count an open on its message. Any token gets the
    pixel (an e-mail must not show a broken image); only one this server signed counts."""
    count_open(token)
    return Response(PIXEL, media_type="image/gif",
                    headers={"Cache-Control": "no-cache, no-store, must-revalidate, max-age=0", "Pragma": "no-cache", "Expires": "0"})


app.include_router(public)
app.include_router(protected)
app.include_router(templates_router, dependencies=[Depends(require_token)])
