"""Pause, resume and cancel a notification task through its flow run, as the UI's buttons do."""
from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled, Cancelling, Suspended
from sqlalchemy import select

from models.db import session_scope
from models.errors import NotiflowError, TaskNotFound
from models.tables import NotificationTask
from deployments.runs import start_tracking
from tasks.control.control import cancel_unsent, hold_unsent


def find_task(ref: str) -> NotificationTask:
    """A task by id, or by name (the newest with that name)."""
    with session_scope() as session:
        task = session.get(NotificationTask, int(ref)) if ref.isdigit() else session.scalars(
            select(NotificationTask).where(NotificationTask.name == ref).order_by(NotificationTask.id.desc())
        ).first()
    if task is None:
        raise TaskNotFound(f"no notification task {ref!r}; list them with `notiflow tasks`")
    if task.flow_run_id is None:
        raise NotiflowError(f"notification task {task.id} has no flow run yet")
    return task


def pause(ref: str) -> str:
    task = find_task(ref)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(task.flow_run_id))
        state = run.state
        if state is None or state.type not in (StateType.RUNNING, StateType.SCHEDULED, StateType.PENDING):
            raise NotiflowError(f"task {task.id} cannot be paused: its run is {state.name if state else 'unknown'}")
        # No timeout: a paused campaign holds until someone resumes or cancels it.
        client.set_flow_run_state(run.id, Suspended(), force=True)
    held = hold_unsent(task.id)
    return f"task {task.id} paused: {held} unsent messages held; resume with `notiflow resume {task.id}`"


def resume(ref: str) -> str:
    task = find_task(ref)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(task.flow_run_id))
        if run.state is None or run.state.type != StateType.PAUSED:
            raise NotiflowError(f"task {task.id} is not paused: its run is {run.state.name if run.state else 'unknown'}")
        result = client.resume_flow_run(run.id)
        if result.status.value != "ACCEPT":
            raise NotiflowError(f"Prefect refused to resume task {task.id}: {result.details}")
    return f"task {task.id} resumed; its run continues where it stopped"


def cancel(ref: str) -> str:
    task = find_task(ref)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(task.flow_run_id))
        state = run.state
        if state is not None and state.is_final():
            raise NotiflowError(f"task {task.id} has ended already: its run is {state.name}")
        # A running run is stopped by its runner (Cancelling); a waiting or suspended one has no process.
        live = state is not None and state.type in (StateType.RUNNING, StateType.CANCELLING)
        client.set_flow_run_state(run.id, Cancelling() if live else Cancelled(), force=True)
    # What went out is followed to its final status, then reported; started before the task leaves the
    # supervisor's view, so a failure here leaves it to the supervisor's next pass.
    start_tracking(task.id, "cancelled")
    cancelled = cancel_unsent(task.id)
    return f"task {task.id} cancelled: {cancelled} unsent messages will never be sent; those sent are still tracked"
