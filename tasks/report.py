"""Build report: the notification task's Excel file, one row per message, plus its rejected rows."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select
from sqlmodel import Session

from models.db import get_engine, session_scope
from models.settings import get_settings
from models.tables import Message, NotificationTask, Rejection
import json

# The history export's columns, in the order of the product spec (§8).
MESSAGE_COLUMNS = (
    "message id", "bulk id", "group id", "flow id", "status", "status description", "channel", "sender",
    "recipient", "text", "fee", "mobile operator", "template id", "template name", "variables", "part count",
    "e-mail views", "e-mail clicks", "short link", "short-link clicks", "created at", "sent at", "delivered at",
    "send-start time", "delivery expiry time",
)
REJECTION_COLUMNS = ("row", "column", "value", "reason")


@dataclass(frozen=True)
class ReportResult:
    path: str
    counts: dict[str, int]
    total_fee: str


@task(name="build report", cache_policy=NO_CACHE)
def build_report(task_id: int) -> ReportResult:
    """Write the report file (again, if it exists: it always shows the latest statuses)."""
    settings = get_settings()
    zone = ZoneInfo(settings.timezone)
    engine = get_engine()
    with Session(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None, f"notification task {task_id} does not exist"
        counts = dict(session.execute(
            select(Message.status, func.count()).where(Message.task_id == task_id).group_by(Message.status)
        ).all())
        total_fee = session.scalar(select(func.coalesce(func.sum(Message.fee), 0)).where(Message.task_id == task_id))
        path = settings.reports_dir.resolve() / f"task-{task_id}-{_slug(notification_task.name)}.xlsx"
        path.parent.mkdir(parents=True, exist_ok=True)
        workbook = Workbook(write_only=True)
        bold = Font(bold=True)

        def header(sheet: Any, names: tuple[str, ...]) -> None:
            cells = []
            for name in names:
                cell = WriteOnlyCell(sheet, value=name)
                cell.font = bold
                cells.append(cell)
            sheet.append(cells)

        messages = workbook.create_sheet("Messages")
        messages.freeze_panes = "A2"
        header(messages, MESSAGE_COLUMNS[:20] + tuple(f"{c} ({settings.timezone})" for c in MESSAGE_COLUMNS[20:]))
        query = select(Message).where(Message.task_id == task_id).order_by(Message.id).execution_options(yield_per=2000)
        for message in session.scalars(query):
            messages.append(_message_row(message, zone))

        rejected = workbook.create_sheet("Rejected rows")
        rejected.freeze_panes = "A2"
        header(rejected, REJECTION_COLUMNS)
        for rejection in session.scalars(select(Rejection).where(Rejection.task_id == task_id).order_by(Rejection.row, Rejection.id)):
            rejected.append([rejection.row, rejection.column, rejection.value, rejection.reason])

        summary = workbook.create_sheet("Summary")
        header(summary, ("notification task", notification_task.name))
        summary.append(["accepted rows", notification_task.accepted])
        summary.append(["rejected rows", notification_task.rejected])
        summary.append(["total fee", Decimal(total_fee or 0)])
        summary.append([])
        summary.append(["status", "messages"])
        for status, number in sorted(counts.items()):
            summary.append([status, number])
    tmp = path.with_suffix(".tmp.xlsx")
    workbook.save(tmp)
    tmp.replace(path)  # a reader never sees a half-written report

    with session_scope(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None
        notification_task.report_path = str(path)
        notification_task.counts = counts
        session.add(notification_task)
    return ReportResult(path=str(path), counts=counts, total_fee=str(total_fee))


def _local(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    return None if moment is None else moment.astimezone(zone).replace(tzinfo=None)


def _message_row(message: Message, zone: ZoneInfo) -> list[Any]:
    return [
        message.id, message.bulk_id, message.group_id, message.flow_id, message.status, message.status_description,
        message.channel, message.sender if message.channel == "sms" else None, message.recipient, message.text,
        message.fee, None, None, None, json.dumps(message.variables, ensure_ascii=False) if message.variables else None,
        message.parts, 0, 0, None, 0,
        _local(message.created_at, zone), _local(message.sent_at, zone), _local(message.delivered_at, zone),
        _local(message.scheduled_at, zone), _local(message.expires_at, zone),
    ]


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name, flags=re.UNICODE).strip("-")[:60] or "task"
