"""The spec's task list: tasks searchable by name and creation date, by state, with their runs' addresses."""
from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select

from deployments.runs import ui_url
from models.db import session_scope
from models.errors import NotiflowError
from models.settings import get_settings
from models.status import DELIVERED_STATUSES, TaskState
from models.tables import Message, NotificationTask


def task_list(state: str | None = None, search: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
    query = select(NotificationTask).order_by(NotificationTask.id.desc())
    if state:
        try:
            query = query.where(NotificationTask.state == TaskState(state).value)
        except ValueError as exc:
            raise NotiflowError(f"--state {state!r}: use one of {', '.join(s.value for s in TaskState)}") from exc
    if search:
        query = query.where(func.lower(NotificationTask.name).contains(search.lower()))
    if since:
        try:
            day = date.fromisoformat(since)
        except ValueError as exc:
            raise NotiflowError(f"--since {since!r} is not a date like 2026-11-01") from exc
        start = datetime.combine(day, time(0), ZoneInfo(get_settings().timezone)).astimezone(timezone.utc)
        query = query.where(NotificationTask.created_at >= start)
    with session_scope() as session:
        tasks = list(session.scalars(query))
        delivered = [s.value for s in DELIVERED_STATUSES]
        progress = {
            task_id: (sent or 0, done or 0)
            for task_id, sent, done in session.execute(
                select(
                    Message.task_id,
                    func.count(Message.provider_message_id),
                    func.sum(case((Message.status.in_(delivered), 1), else_=0)),
                ).where(Message.task_id.in_([t.id for t in tasks])).group_by(Message.task_id)
            ).all()
        }
    return [
        {
            "id": t.id, "name": t.name, "state": t.state, "state_description": t.state_description,
            "created_at": t.created_at.isoformat(), "finished_at": t.finished_at.isoformat() if t.finished_at else None,
            "accepted": t.accepted, "rejected": t.rejected, "sent": progress.get(t.id, (0, 0))[0],
            "delivered": progress.get(t.id, (0, 0))[1], "report": t.report_path, "flow_run_id": t.flow_run_id,
            "ui_url": ui_url(t.flow_run_id) if t.flow_run_id else None,
        }
        for t in tasks
    ]
