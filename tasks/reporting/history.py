"""The history export (spec §8): every message of a period, filtered, as an Excel file in the reports folder."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from models.db import get_engine
from models.params import HistoryFilter
from models.settings import get_settings
from models.status import ACCEPTED_STATUSES, UNSENT_STATUSES, HistoryGroup, MessageStatus
from models.tables import Message
from tasks.reporting.workbook import clicks_by_message, save, write_messages


@dataclass(frozen=True)
class HistoryExport:
    path: str
    messages: int
    since: date
    until: date


def period(filters: HistoryFilter, today: date | None = None) -> tuple[date, date]:
    """The export's first and last day: by default from the first of the current month to today."""
    today = today or datetime.now(ZoneInfo(get_settings().timezone)).date()
    since = filters.since or today.replace(day=1)
    until = filters.until or today
    if until < since:
        raise ValueError(f"the period ends ({until}) before it starts ({since}); give --until on or after --since")
    return since, until


def export_history(filters: HistoryFilter, today: date | None = None) -> HistoryExport:
    settings = get_settings()
    zone = ZoneInfo(settings.timezone)
    since, until = period(filters, today)
    start = datetime.combine(since, time(0), zone).astimezone(UTC)
    end = datetime.combine(until + timedelta(days=1), time(0), zone).astimezone(UTC)
    query = select(Message).where(Message.created_at >= start, Message.created_at < end)
    if filters.channel:
        query = query.where(Message.channel == filters.channel.value)
    if filters.status:
        query = query.where(Message.status == filters.status.value)
    if filters.group is not HistoryGroup.ALL:
        query = query.where(in_group(filters.group))
    if filters.phone:
        digits = re.sub(r"\D", "", filters.phone)
        if not digits:
            raise ValueError(f"phone filter {filters.phone!r} has no digits; give part of a number, e.g. 912345")
        query = query.where(Message.recipient.contains(digits))
    if filters.task_id is not None:
        query = query.where(Message.task_id == filters.task_id)
    path = settings.reports_dir.resolve() / _file_name(filters, since, until)
    workbook = Workbook(write_only=True)
    with Session(get_engine()) as session:
        clicks = clicks_by_message(session, query.with_only_columns(Message.id))
        written = write_messages(
            workbook, session.scalars(query.order_by(Message.id).execution_options(yield_per=2000)), settings.timezone, clicks
        )
    save(workbook, path)
    return HistoryExport(path=str(path), messages=written, since=since, until=until)


_GROUP_STATUSES = {
    HistoryGroup.CREATED: (MessageStatus.CREATED, MessageStatus.QUEUED, MessageStatus.PAUSED),
    HistoryGroup.PENDING: tuple(ACCEPTED_STATUSES),
    HistoryGroup.DELIVERED: (MessageStatus.DELIVERED, MessageStatus.READ),
    HistoryGroup.UNDELIVERED: (MessageStatus.UNDELIVERED, MessageStatus.EXPIRED),
    HistoryGroup.CANCELED: (MessageStatus.CANCELED, MessageStatus.SKIPPED),
    HistoryGroup.ERROR: (MessageStatus.ERROR,),
    HistoryGroup.DELAYED: (MessageStatus.DELAYED,),
}


def in_group(group: HistoryGroup) -> ColumnElement[bool]:
    """The messages of one of the history list's groups (spec §5)."""
    if group is HistoryGroup.CREATED_OPTIONAL:
        return and_(Message.required.is_(True), Message.status.in_([s.value for s in UNSENT_STATUSES]))
    if group is HistoryGroup.OMITTED_OPTIONAL:
        later = aliased(Message)
        return and_(Message.status == MessageStatus.ERROR.value, Message.send_order.is_not(None), exists().where(
            later.task_id == Message.task_id, later.row == Message.row, later.step > Message.step, later.waits_for.is_(None),
            later.required.is_(False)))
    return Message.status.in_([s.value for s in _GROUP_STATUSES[group]])


def _file_name(filters: HistoryFilter, since: date, until: date) -> str:
    parts: list[Any] = ["history", since.isoformat(), until.isoformat()]
    for name in ("channel", "status", "group", "phone", "task_id"):
        value = getattr(filters, name)
        if value is not None and value is not HistoryGroup.ALL:
            text = re.sub(r"[^\w]+", "", str(getattr(value, "value", value)))
            parts.append(f"{name.removesuffix('_id')}-{text}")
    return "_".join(str(p) for p in parts) + ".xlsx"


def list_reports() -> list[dict[str, Any]]:
    """Every report file in the reports folder, newest first."""
    folder: Path = get_settings().reports_dir.resolve()
    if not folder.exists():
        return []
    files = sorted((p for p in folder.glob("*.xlsx") if not p.name.endswith(".tmp.xlsx")), key=lambda p: p.stat().st_mtime, reverse=True)
    return [
        {"name": p.name, "path": str(p), "bytes": p.stat().st_size,
         "modified": datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat()}
        for p in files
    ]
