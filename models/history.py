"""Status changes of messages, always written together with their append-only history."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, insert, literal, select, update
from sqlmodel import Session

from models.status import MessageStatus
from models.tables import Message, StatusEvent, utcnow

_last_stamp = datetime.min.replace(tzinfo=utcnow().tzinfo)


def unique_stamp() -> datetime:
    """Now, but never equal to the previous stamp of this process: it tags one bulk change's rows."""
    global _last_stamp
    now = utcnow()
    if now <= _last_stamp:
        now = _last_stamp + timedelta(microseconds=1)
    _last_stamp = now
    return now


def transition(
    session: Session,
    condition: ColumnElement[bool],
    status: MessageStatus,
    description: str,
    source: str,
    **values: Any,
) -> int:
    """Move every message matching `condition` to `status` and log one event each; returns how many."""
    at = unique_stamp()
    moved = session.execute(
        update(Message)
        .where(condition)
        .values(status=status.value, status_description=description, status_updated_at=at, **values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved:
        log_changes_at(session, at, source)
    return moved or 0


def log_changes_at(session: Session, at: datetime, source: str) -> None:
    """Append an event for every message whose status changed at the stamp `at`."""
    changed = select(
        Message.id, Message.task_id, Message.status, Message.status_description, literal(source), literal(at, type_=StatusEvent.__table__.c.at.type)
    ).where(Message.status_updated_at == at)
    session.execute(
        insert(StatusEvent).from_select(["message_id", "task_id", "status", "description", "source", "at"], changed)
    )


def record_each(session: Session, changes: list[dict[str, Any]], source: str) -> None:
    """Apply per-message changes (each a dict with `id`, `status`, `status_description`, ...) with events."""
    if not changes:
        return
    at = unique_stamp()
    for change in changes:
        change["status_updated_at"] = at
    session.execute(update(Message), changes)
    log_changes_at(session, at, source)
