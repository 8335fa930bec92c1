"""The notification task's record: created for a flow run, its state kept in step with the run."""
from __future__ import annotations

import uuid

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from models.db import session_scope
from models.errors import TaskFileError, TaskNotFound
from models.params import NotificationTaskParams
from models.status import ENDED_TASK_STATES, TaskState
from models.tables import NotificationTask, utcnow
from tasks.delivery.lease import lock_task
from tasks.intake import task_file
from tasks.schedule.windows import parse_windows


@task(name="open notification task", cache_policy=NO_CACHE)
def open_task(params: NotificationTaskParams, flow_run_id: str) -> int:
    """The task this flow run works on: found again on every re-entry (resume, wake-up, retry), else created.

    The file is copied under the task's own name on creation, so a re-run before its rows are stored
    reads exactly what the first run read; once they are, the copy is deleted and re-runs read the database.
    """
    with session_scope() as session:
        if params.task_id is not None:
            existing = session.get(NotificationTask, params.task_id)
            if existing is None:
                raise TaskNotFound(f"notification task {params.task_id} does not exist; list tasks with `notiflow tasks`")
            existing.flow_run_id = flow_run_id
        else:
            existing = session.scalar(select(NotificationTask).where(NotificationTask.flow_run_id == flow_run_id))
        if existing is not None:
            # A paused task stays paused: only a resume (seen by the flow) lifts it, never a wake-up.
            if existing.state not in (TaskState.COMPLETED, TaskState.CANCELLED, TaskState.PAUSED):
                existing.state, existing.state_description = TaskState.IN_PROGRESS, ""
            existing.started_at = existing.started_at or utcnow()
            session.add(existing)
            session.flush()
            assert existing.id is not None
            return existing.id

    windows = list(params.windows)
    try:
        if windows:
            parse_windows(windows)
    except ValueError as exc:
        raise TaskFileError(f"time limiter: {exc}") from exc
    uid = uuid.uuid4().hex
    stored = task_file.store(params.task_file, uid)
    with session_scope() as session:
        created = NotificationTask(
            uid=uid,
            name=params.task_name,
            file=str(stored),
            source_file=task_file.redact(params.task_file),
            windows=windows,
            channels=[c.value for c in params.channels],
            dry_run=params.dry_run,
            state=TaskState.IN_PROGRESS,
            flow_run_id=flow_run_id,
            started_at=utcnow(),
        )
        session.add(created)
        session.flush()
        assert created.id is not None
        return created.id


@task(name="set task state", cache_policy=NO_CACHE)
def set_state(task_id: int, state: TaskState, description: str = "", *, resume: bool = False) -> TaskState:
    """Move the task to `state`; returns the state it is in afterwards.

    A cancelled task stays cancelled, and a paused one stays paused unless this is its resume: the flow
    never talks a pause away by saying it waits or completes.
    """
    with session_scope() as session:
        current = lock_task(session, task_id)
        if current == TaskState.CANCELLED and state != TaskState.CANCELLED:
            return TaskState.CANCELLED
        if current == TaskState.PAUSED and not resume and state not in (TaskState.CANCELLED, TaskState.FAILED):
            return TaskState.PAUSED
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None
        notification_task.state, notification_task.state_description = state, description
        if state in ENDED_TASK_STATES:
            notification_task.finished_at = utcnow()
        session.add(notification_task)
    return state


def task_state(task_id: int) -> TaskState:
    with session_scope() as session:
        return TaskState(session.scalar(select(NotificationTask.state).where(NotificationTask.id == task_id)))

