"""E-mail opens: a mail client fetched a message's open-tracking pixel (the SMTP adapter puts one in each e-mail)."""
from __future__ import annotations

from sqlalchemy import func, literal, select, update

from models.db import session_scope
from models.signing import opened_ref
from models.tables import Message, NotificationTask, UTCDateTime, utcnow


def count_open(token: str) -> bool:
    """Count one open of the message a pixel token names; False (nothing counted) for a token this server did not sign."""
    ref = opened_ref(token)
    if ref is None:
        return False
    uid, _, message_id = ref.rpartition("-")
    # The task's uid as well as the id: a ref of another database's task (same id, other uid) counts nothing here.
    of_task = select(NotificationTask.id).where(NotificationTask.uid == uid).scalar_subquery()
    with session_scope() as session:
        counted = session.execute(
            update(Message)
            .where(Message.id == int(message_id), Message.task_id == of_task)
            .values(opens=Message.opens + 1, opened_at=func.coalesce(Message.opened_at, literal(utcnow(), UTCDateTime())))
        ).rowcount
    return bool(counted)
