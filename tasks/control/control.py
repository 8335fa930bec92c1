"""Pause and cancel of a notification task's messages: what suspend and cancel of its run mean here.

These are plain functions, not Prefect tasks: they run where the run's own process cannot — in the
CLI that asks for the change, and in the supervisor of `notiflow server`, which sees what the UI did
to a run that is suspended, waiting, or was killed.
"""
from __future__ import annotations

from sqlalchemy import and_, func, select
from sqlmodel import Session

from models.db import session_scope
from models.history import transition
from models.status import ENDED_TASK_STATES, FINAL_STATUSES, UNSENT_STATUSES, MessageStatus, TaskState
from models.tables import Message, NotificationTask, utcnow
from tasks.delivery.lease import lock_task

# A pause holds what is not handed to a provider yet (a PAUSED message is held already); a cancel ends all of it.
_HOLDABLE = [s.value for s in UNSENT_STATUSES - {MessageStatus.PAUSED}]
_CANCELABLE = [s.value for s in UNSENT_STATUSES]


def hold_unsent(task_id: int, reason: str = "paused by the user") -> int:
    """Messages not yet handed to a provider become PAUSED; the task shows as paused, with the reason."""
    with session_scope() as session:
        state = lock_task(session, task_id)  # the task row before its messages, as dispatch and cancel do
        held = transition(
            session,
            # A message waiting for its chain's earlier channels is held by its chain already: it stays as it is.
            and_(Message.task_id == task_id, Message.status.in_(_HOLDABLE), Message.handed_at.is_(None), Message.waits_for.is_(None)),
            MessageStatus.PAUSED, reason, "pause",
        )
        if state is not None and state not in ENDED_TASK_STATES:
            session.execute(
                NotificationTask.__table__.update()
                .where(NotificationTask.id == task_id)
                .values(state=TaskState.PAUSED.value, state_description=reason)
            )
    return held


def cancel_unsent(task_id: int) -> int:
    """Messages not yet handed to a provider become CANCELED and are never sent; those handed stay tracked
    (the track-delivery run follows them to a final status). The task's description counts both."""
    with session_scope() as session:
        state = lock_task(session, task_id)  # the task row before its messages, as dispatch and pause do
        cancelled = transition(
            session,
            and_(Message.task_id == task_id, Message.status.in_(_CANCELABLE), Message.handed_at.is_(None)),
            MessageStatus.CANCELED, "cancelled by the user before sending", "cancel",
        )
        if state is not None:
            values: dict[str, object] = {"state_description": cancel_description(session, task_id)}
            if state != TaskState.CANCELLED:
                values.update(state=TaskState.CANCELLED.value, finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
            session.execute(NotificationTask.__table__.update().where(NotificationTask.id == task_id).values(**values))
    return cancelled


def cancel_description(session: Session, task_id: int) -> str:
    """What a cancel left: how many messages went out, how many are still being reconciled, how many were cancelled."""
    went_out, in_flight, cancelled = session.execute(
        select(
            func.count().filter(Message.provider_message_id.is_not(None)),
            func.count().filter(
                # As tasks.delivery.reconcile.in_flight: a refused or spent message (final) is not in flight any more.
                Message.provider_message_id.is_(None), Message.handed_at.is_not(None),
                Message.status.not_in([s.value for s in FINAL_STATUSES]),
            ),
            func.count().filter(Message.status == MessageStatus.CANCELED.value),
        ).where(Message.task_id == task_id)
    ).one()
    checking = f", {in_flight} in flight being reconciled with the provider" if in_flight else ""
    return f"cancelled by the user: {went_out} messages went out{checking}, {cancelled} cancelled"


def describe_cancelled(task_id: int) -> str | None:
    """Refresh a cancelled task's description once its messages in flight are settled; None if not cancelled."""
    with session_scope() as session:
        if lock_task(session, task_id) != TaskState.CANCELLED:
            return None
        description = cancel_description(session, task_id)
        session.execute(
            NotificationTask.__table__.update().where(NotificationTask.id == task_id).values(state_description=description)
        )
    return description


def mark_failed(task_id: int, reason: str) -> None:
    with session_scope() as session:
        task = session.get(NotificationTask, task_id)
        if task is not None and task.state not in ENDED_TASK_STATES:
            task.state, task.state_description = TaskState.FAILED, reason
            task.finished_at = utcnow()
            session.add(task)


# A single message may be cancelled while it waits (spec §3); a QUEUED one may be claimed for sending any moment.
MESSAGE_CANCELABLE = (MessageStatus.CREATED, MessageStatus.DELAYED, MessageStatus.PAUSED)


def cancel_message(message_id: int, reason: str = "cancelled by the user before sending") -> tuple[MessageStatus, list[int]] | None:
    """Cancel one message that is CREATED, DELAYED or PAUSED, and the later channels of its chain still waiting for
    it (cancelling is not failing: its fallback is not sent either). Returns its status afterwards and the ids
    cancelled (none: it could not be); None when there is no such message."""
    with session_scope() as session:
        found = session.execute(select(Message.task_id, Message.row, Message.step).where(Message.id == message_id)).first()
        if found is None:
            return None
        lock_task(session, found.task_id)  # the task row before its messages, as dispatch, pause and cancel do
        unsent = and_(Message.handed_at.is_(None), Message.provider_message_id.is_(None))
        moved = transition(session, and_(Message.id == message_id, unsent), MessageStatus.CANCELED, reason, "cancel",
                           from_statuses=MESSAGE_CANCELABLE)
        cancelled = [message_id] if moved else []
        if moved:
            waiting = and_(Message.task_id == found.task_id, Message.row == found.row, Message.step > found.step,
                           Message.waits_for.is_not(None), unsent)
            ids = list(session.scalars(select(Message.id).where(waiting, Message.status == MessageStatus.CREATED.value)))
            if ids:
                transition(session, and_(Message.id.in_(ids), waiting), MessageStatus.CANCELED,
                           f"cancelled with message {message_id}, whose fallback it was", "cancel",
                           from_statuses=[MessageStatus.CREATED])
                cancelled += ids
        status = MessageStatus(session.scalar(select(Message.status).where(Message.id == message_id)))
    return status, cancelled
