"""How many messages of a notification task have each status: what the report, the funnel, the API and the CLI count."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session

from models.tables import Message


def status_counts(session: Session, task_id: int) -> dict[str, int]:
    """Messages of the task per status; a status no message has is absent, not zero."""
    return dict(session.execute(
        select(Message.status, func.count()).where(Message.task_id == task_id).group_by(Message.status)
    ).all())
