"""Waiting without a process: a run that has nothing to do for a while reschedules itself.

Measured behaviour this relies on (../shared/spec/prefect.md): proposing a Scheduled state for the
run's own id and raising Pause ends the process cleanly; the runner or a worker starts the same run
again at the due time, from the flow's first line. Short waits just sleep.
"""
from __future__ import annotations

import time
from datetime import datetime

from prefect.client.orchestration import get_client
from prefect.exceptions import Pause
from prefect.runtime import flow_run
from prefect.states import Scheduled
from prefect.utilities.engine import propose_state_sync

from models.settings import get_settings
from models.tables import utcnow


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
    run_id = flow_run.get_id()
    if run_id is None:
        raise RuntimeError("a notification task can only wait for a window as a deployment run; start it with `notiflow run`")
    state = Scheduled(scheduled_time=due, name=name, message=message)
    with get_client(sync_client=True) as client:
        # A worker run keeps the pid of its finished process; a cancel of the waiting run would then
        # wait 300 s in Cancelling for that process to die.
        client.request(
            "PATCH", "/flow_runs/{id}", path_params={"id": run_id},
            json={"infrastructure_pid": None},
        )
        propose_state_sync(client, state, flow_run_id=run_id)
    raise Pause(f"{name}: {message}", state=state)
