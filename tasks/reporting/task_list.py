"""The spec's task list (§3): tasks searchable by name or id and creation date, in the list's categories,
newest first, a page at a time."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, or_, select

from models.db import session_scope
from models.errors import NotiflowError
from models.settings import get_settings
from models.status import DELIVERED_STATUSES, TaskState
from models.tables import Message, NotificationTask


class TaskCategory(StrEnum):
    """The task list's categories (spec §3): "created" holds the scheduled tasks too, "completed" every ended one."""

    IN_PROGRESS = "in progress"
    CREATED = "created"
    PAUSED = "paused"
    COMPLETED = "completed"


CATEGORY_STATES = {
    TaskCategory.IN_PROGRESS: (TaskState.IN_PROGRESS,),
    TaskCategory.CREATED: (TaskState.CREATED, TaskState.SCHEDULED),
    TaskCategory.PAUSED: (TaskState.PAUSED,),
    TaskCategory.COMPLETED: (TaskState.COMPLETED, TaskState.CANCELLED, TaskState.FAILED),
}


@dataclass(frozen=True)
class TaskFilter:
    state: str | None = None
    category: TaskCategory | None = None
    search: str | None = None
    since: date | None = None
    until: date | None = None
    flow_run_id: str | None = None
    task_id: int | None = None


_DAY = timedelta(days=1)


def parse_day(text: str | None, option: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise NotiflowError(f"{option} {text!r} is not a date like 2026-11-01") from exc


def task_list(filters: TaskFilter, *, before_id: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Tasks matching `filters`, newest first; `before_id` and `limit` page through them."""
    query = select(NotificationTask).order_by(NotificationTask.id.desc())
    if filters.state:
        try:
            query = query.where(NotificationTask.state == TaskState(filters.state).value)
        except ValueError as exc:
            raise NotiflowError(f"state {filters.state!r}: use one of {', '.join(s.value for s in TaskState)}") from exc
    if filters.category:
        query = query.where(NotificationTask.state.in_([s.value for s in CATEGORY_STATES[filters.category]]))
    if filters.search:
        # The spec's search: by full id or by any part of the name.
        by_name = func.lower(NotificationTask.name).contains(filters.search.lower())
        query = query.where(or_(by_name, NotificationTask.id == int(filters.search))
                            if re.fullmatch(r"[0-9]{1,9}", filters.search) else by_name)
    zone = ZoneInfo(get_settings().timezone)
    if filters.since:
        query = query.where(NotificationTask.created_at >= datetime.combine(filters.since, time(0), zone).astimezone(timezone.utc))
    if filters.until:
        end = datetime.combine(filters.until, time(0), zone).astimezone(timezone.utc) + _DAY
        query = query.where(NotificationTask.created_at < end)
    if filters.flow_run_id:
        query = query.where(NotificationTask.flow_run_id == filters.flow_run_id)
    if filters.task_id is not None:
        query = query.where(NotificationTask.id == filters.task_id)
    if before_id is not None:
        query = query.where(NotificationTask.id < before_id)
    if limit is not None:
        query = query.limit(limit)
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
        }
        for t in tasks
    ]

