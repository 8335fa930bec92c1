"""The API tasks the api-dispatcher flow sends: which are open, which have messages waiting to be scheduled,
and which are done (a past day's task with every message final)."""
from __future__ import annotations

from sqlalchemy import and_, select

from models.db import session_scope
from models.status import ENDED_TASK_STATES, FINAL_STATUSES, MessageStatus
from models.tables import Message, NotificationTask

_ENDED = [s.value for s in ENDED_TASK_STATES]
_FINAL = [s.value for s in FINAL_STATUSES]


def open_api_tasks() -> list[int]:
    """Every API task (one per token and day) that has not ended, oldest first."""
    with session_scope() as session:
        return list(session.scalars(
            select(NotificationTask.id)
            .where(NotificationTask.api_token_id.is_not(None), NotificationTask.state.not_in(_ENDED))
            .order_by(NotificationTask.id)
        ))


def has_unscheduled(task_id: int) -> bool:
    """A message of the task is CREATED and free to be scheduled (a fallback channel its chain released)."""
    with session_scope() as session:
        return session.execute(
            select(Message.id).where(Message.task_id == task_id, Message.status == MessageStatus.CREATED.value,
                                     Message.waits_for.is_(None)).limit(1)
        ).first() is not None


def api_task_done(task_id: int, today: str) -> bool:
    """The task is of a day before `today` (no message is added to it any more) and every message is final."""
    with session_scope() as session:
        day = session.scalar(select(NotificationTask.api_day).where(NotificationTask.id == task_id))
        if day is None or day >= today:
            return False
        return session.execute(
            select(Message.id).where(and_(Message.task_id == task_id, Message.status.not_in(_FINAL))).limit(1)
        ).first() is None
