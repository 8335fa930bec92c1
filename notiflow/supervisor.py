"""Keeps notification tasks in step with their flow runs, whatever the UI did to them.

A run suspended or cancelled from the UI runs none of our code (no hook runs for a suspended or
waiting run, and a running one is killed mid-batch), so `notiflow server` watches the runs of its
active tasks: a suspended run's unsent messages become PAUSED and its pause loses the UI dialog's
timeout (which would otherwise fail the campaign), a cancelled run's become CANCELED, a crashed or
failed run marks its task failed. A cancelled or crashed run also gets a track-delivery run, which
follows the messages it had handed to providers to their final status and writes the report.

It also keeps one run of the api-dispatcher deployment alive (the HTTP API's sends): a run that crashed,
was killed or cancelled is replaced within a second or two of the runner noticing.
"""
from __future__ import annotations

import logging
import threading
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed, Suspended
from sqlalchemy import select

from models.db import session_scope
from models.status import ENDED_TASK_STATES, TaskState
from models.tables import NotificationTask
from deployments.runs import start_api_dispatcher, start_tracking
from flows.api_dispatcher import API_DISPATCHER
from tasks.control.control import cancel_unsent, hold_unsent, mark_failed

logger = logging.getLogger("notiflow.supervisor")

ACTIVE = tuple(state for state in TaskState if state not in ENDED_TASK_STATES)


def supervise_once(client: SyncPrefectClient) -> None:
    """One look at every active task's run, acting on what changed."""
    with session_scope() as session:
        active = {
            UUID(run_id): (task_id, state)
            for task_id, run_id, state in session.execute(
                select(NotificationTask.id, NotificationTask.flow_run_id, NotificationTask.state).where(
                    NotificationTask.state.in_([s.value for s in ACTIVE]), NotificationTask.flow_run_id.is_not(None)
                )
            ).all()
        }
    if not active:
        return
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(active))), limit=len(active))
    for run in runs:
        task_id, task_state = active[run.id]
        apply_run_state(client, run, task_id, TaskState(task_state))


def apply_run_state(client: SyncPrefectClient, run: FlowRun, task_id: int, task_state: TaskState) -> None:
    state = run.state
    if state is None:
        return
    if state.type == StateType.PAUSED:
        if task_state != TaskState.PAUSED:
            held = hold_unsent(task_id)
            logger.info("task %s: run %s suspended, %s unsent messages paused", task_id, run.id, held)
        if state.state_details.pause_timeout is not None:
            # The UI's Suspend dialog sets a timeout after which Prefect fails the run; a paused
            # campaign must hold until someone resumes or cancels it.
            client.set_flow_run_state(run.id, Suspended(pause_key=state.state_details.pause_key), force=True)
    elif state.type in (StateType.CANCELLING, StateType.CANCELLED):
        # Tracking first: once cancel_unsent has run the task is no longer active, so no later pass
        # would retry a tracking run that failed to start.
        start_tracking(task_id, "cancelled")
        cancelled = cancel_unsent(task_id)
        logger.info("task %s: run %s cancelled, %s unsent messages cancelled, tracking the rest", task_id, run.id, cancelled)
    elif state.type in (StateType.FAILED, StateType.CRASHED):
        start_tracking(task_id, f"{state.type.value.lower()}-{state.id}")
        mark_failed(task_id, f"flow run {state.name.lower()}: {state.message or ''}".strip(": "))


# A run in one of these states is (or is about to be) a live dispatcher.
_ALIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED]


class DispatcherKeeper:
    """Keeps one api-dispatcher run alive: starts one when none is scheduled, pending or running."""

    def __init__(self) -> None:
        self.deployment_id: UUID | None = None

    def check(self, client: SyncPrefectClient) -> None:
        if self.deployment_id is None:
            try:
                self.deployment_id = client.read_deployment_by_name(API_DISPATCHER).id
            except ObjectNotFound:
                return  # `notiflow server` has not registered its deployments yet
            # Runs a stopped `notiflow server` left Running have no process any more: they are not alive.
            for run in self._alive(client):
                client.set_flow_run_state(run.id, Crashed(message="left over from a notiflow server that stopped"), force=True)
        if not self._alive(client):
            run = start_api_dispatcher()
            logger.info("started api-dispatcher run %s", run.id)

    def _alive(self, client: SyncPrefectClient) -> list[FlowRun]:
        assert self.deployment_id is not None
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[self.deployment_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_ALIVE)),
        ), limit=10)


def supervise_forever(stop: threading.Event, interval: float = 1.0) -> None:
    keeper = DispatcherKeeper()
    with get_client(sync_client=True) as client:
        while not stop.is_set():
            for step in (supervise_once, keeper.check):
                try:
                    step(client)
                except Exception:  # the supervisor must outlive a database or API hiccup
                    logger.exception("supervisor pass failed; trying again")
            stop.wait(interval)


def start_supervisor() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=supervise_forever, args=(stop,), name="notiflow-supervisor", daemon=True).start()
    return stop
