"""Creating runs of the notification-task deployment, and their addresses in the Prefect UI.

Every campaign is a deployment run, however it is started (CLI, API, UI): only those obey the UI's
Suspend and Cancel.
"""
from __future__ import annotations

import os
from uuid import UUID

import httpx
from prefect.client.schemas.objects import FlowRun

from flows.api_dispatcher import API_DISPATCHER
from flows.campaign import NOTIFICATION_TASK
from flows.track import TRACK_DELIVERY
from models.errors import NotiflowError
from models.params import NotificationTaskParams


def ui_url(flow_run_id: UUID | str) -> str:
    base = os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    return f"{base}/runs/flow-run/{flow_run_id}"


def start_run(params: NotificationTaskParams) -> FlowRun:
    """Create a run of the notification-task deployment; the served runner picks it up."""
    from prefect.deployments import run_deployment

    api = os.environ["PREFECT_API_URL"]
    if not answers(f"{api.rstrip('/')}/health"):
        raise NotiflowError(f"the Prefect server at {api} is not answering: start it with `notiflow server` (or `make demo`)")
    try:
        return run_deployment(
            NOTIFICATION_TASK,
            parameters={"params": params.model_dump(mode="json")},
            flow_run_name=params.task_name,
            timeout=0,
        )
    except Exception as exc:
        if "not found" in str(exc).lower() or "404" in str(exc):
            raise NotiflowError(f"deployment {NOTIFICATION_TASK} is not registered: start `notiflow server` first") from exc
        raise


def start_tracking(task_id: int, occasion: str) -> FlowRun:
    """Start the track-delivery run for a task whose campaign run ended (cancelled, crashed); one per
    task and occasion, however often it is asked (Prefect's idempotency key)."""
    from prefect.deployments import run_deployment

    try:
        return run_deployment(
            TRACK_DELIVERY, parameters={"task_id": task_id}, timeout=0,
            idempotency_key=f"track-delivery-{task_id}-{occasion}",
        )
    except Exception as exc:
        raise NotiflowError(
            f"task {task_id}: could not start {TRACK_DELIVERY} ({exc}); its sent messages are not followed "
            "until it runs: check that `notiflow server` is running"
        ) from exc


def start_api_dispatcher() -> FlowRun:
    """Start a run of the api-dispatcher deployment (the supervisor of `notiflow server` keeps one alive)."""
    from prefect.deployments import run_deployment

    return run_deployment(API_DISPATCHER, timeout=0, flow_run_name="api-dispatcher")


def answers(url: str) -> bool:
    """The service at `url` says it is healthy (HTTP 200)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
