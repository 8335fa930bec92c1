"""Pause and cancel of a notification task's messages: what suspend and cancel of its run mean here.

These are plain functions, not Prefect tasks: they run where the run's own process cannot — in the
CLI that asks for the change, and in the supervisor of `notiflow server`, which sees what the UI did
to a run that is suspended, waiting, or was killed.
"""
from __future__ import annotations

from sqlalchemy import and_

from models.db import session_scope
from models.history import transition
from models.status import MessageStatus, TaskState
from models.tables import Message, NotificationTask, utcnow

_HOLDABLE = [MessageStatus.CREATED.value, MessageStatus.QUEUED.value, MessageStatus.DELAYED.value]
_CANCELABLE = _HOLDABLE + [MessageStatus.PAUSED.value]


def hold_unsent(task_id: int, reason: str = "paused by the user") -> int:
    """Messages not yet handed to a provider become PAUSED; the task shows as paused."""
    with session_scope() as session:
        held = transition(
            session,
            and_(Message.task_id == task_id, Message.status.in_(_HOLDABLE), Message.handed_at.is_(None)),
            MessageStatus.PAUSED, reason, "pause",
        )
        task = session.get(NotificationTask, task_id)
        if task is not None and task.state not in (TaskState.COMPLETED, TaskState.CANCELLED, TaskState.FAILED):
            task.state, task.state_description = TaskState.PAUSED, reason
            session.add(task)
    return held


def cancel_unsent(task_id: int, reason: str = "cancelled by the user before sending") -> int:
    """Messages not yet handed to a provider become CANCELED and are never sent; sent ones stay tracked."""
    with session_scope() as session:
        cancelled = transition(
            session,
            and_(Message.task_id == task_id, Message.status.in_(_CANCELABLE), Message.handed_at.is_(None)),
            MessageStatus.CANCELED, reason, "cancel",
        )
        task = session.get(NotificationTask, task_id)
        if task is not None and task.state != TaskState.CANCELLED:
            task.state, task.state_description = TaskState.CANCELLED, reason
            task.finished_at = task.finished_at or utcnow()
            task.lease_owner = task.lease_expires_at = None
            session.add(task)
    return cancelled


def mark_failed(task_id: int, reason: str) -> None:
    with session_scope() as session:
        task = session.get(NotificationTask, task_id)
        if task is not None and task.state not in (TaskState.COMPLETED, TaskState.CANCELLED, TaskState.FAILED):
            task.state, task.state_description = TaskState.FAILED, reason
            task.finished_at = utcnow()
            session.add(task)
