"""Waiting without a process: a run that has nothing to do for a while reschedules itself, and a
paused run suspends itself until someone resumes it.

Measured behaviour this relies on (../shared/spec/prefect.md): proposing a Scheduled state for the
run's own id and raising Pause ends the process cleanly; the runner or a worker starts the same run
again at the due time, from the flow's first line. Short waits just sleep.
"""
from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import NoReturn
from zoneinfo import ZoneInfo

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import Pause
from prefect.runtime import flow_run
from prefect.states import Scheduled, Suspended
from prefect.utilities.engine import propose_state_sync

from models.settings import get_settings
from models.tables import utcnow

# The names of the Scheduled states a waiting run shows as its badge in the UI; `notiflow run` stops
# following a run that shows one of them.
WAITING_FOR_WINDOW = "Waiting for window"
WAITING_FOR_STATUS_POLL = "Waiting for status poll"
WAITING_STATES = (WAITING_FOR_WINDOW, WAITING_FOR_STATUS_POLL)


def wait_until(due: datetime, name: str, message: str) -> None:
    """Return at `due`: asleep when it is near, otherwise by rescheduling this run (raises Pause).

    The engine may start a rescheduled run up to ~0.5 s early; the short sleep absorbs that instead of
    rescheduling again.
    """
    remaining = (due - utcnow()).total_seconds()
    if remaining <= 0:
        return
    if remaining <= max(get_settings().max_inprocess_wait_seconds, 2.0):
        time.sleep(remaining)
        return
    run_id = _own_run_id()
    state = Scheduled(scheduled_time=due, name=name, message=message)
    with get_client(sync_client=True) as client:
        _forget_process(client, run_id)
        propose_state_sync(client, state, flow_run_id=run_id)
    raise Pause(f"{name}: {message}", state=state)


def suspend_until_resumed(reason: str) -> NoReturn:
    """Leave the process with the run Suspended (no timeout): it continues only when someone resumes it.

    A run already suspended from outside (UI, CLI) keeps that state; a running one proposes its own
    Suspended state with `reason` as its message, under a fresh key (a repeated key would not fire).
    """
    run_id = _own_run_id()
    state = Suspended(pause_key=f"notiflow-{uuid.uuid4().hex}", message=reason)
    with get_client(sync_client=True) as client:
        _forget_process(client, run_id)
        current = client.read_flow_run(run_id).state
        if current is not None and current.type == StateType.PAUSED:
            state = current
        else:
            state = propose_state_sync(client, state, flow_run_id=run_id)
    raise Pause(reason, state=state)


def entered_by_resume() -> bool:
    """This entry of the run follows a Resume (UI button, `notiflow resume`), not a wake-up or a retry.

    Prefect starts a resumed run through a Scheduled state named "Resuming"; our wake-ups go through
    "Waiting for …" ones and a retry through "AwaitingRetry".
    """
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(_own_run_id())
    scheduled = [s for s in states if s.type == StateType.SCHEDULED]
    latest = max(scheduled, key=lambda s: s.timestamp, default=None)
    return latest is not None and latest.name == "Resuming"


def local_time(moment: datetime) -> str:
    """`moment` as the account reads it, for the messages of waiting states."""
    zone = get_settings().timezone
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M:%S} {zone}"


def _own_run_id() -> uuid.UUID:
    run_id = flow_run.get_id()
    if run_id is None:
        raise RuntimeError("a notification task can only wait or suspend as a deployment run; start it with `notiflow run`")
    return uuid.UUID(str(run_id))


def _forget_process(client: SyncPrefectClient, run_id: uuid.UUID) -> None:
    # A worker run keeps the pid of its finished process; a cancel of the waiting run would then
    # wait 300 s in Cancelling for that process to die.
    client.request("PATCH", "/flow_runs/{id}", path_params={"id": str(run_id)}, json={"infrastructure_pid": None})
