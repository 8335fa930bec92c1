"""Build report: the notification task's Excel file, one row per message, plus its rejected rows."""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from openpyxl import Workbook
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select
from sqlmodel import Session

from models.db import get_engine, session_scope
from models.settings import get_settings
from models.tables import Message, NotificationTask, Rejection
from tasks.reporting.counts import status_counts
from tasks.reporting.workbook import (
    MESSAGE_COLUMNS,
    append,
    clicks_by_message,
    header,
    save,
    write_messages,
)

__all__ = ["MESSAGE_COLUMNS", "REJECTION_COLUMNS", "ReportResult", "build_report"]

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
    engine = get_engine()
    with Session(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None, f"notification task {task_id} does not exist"
        counts = status_counts(session, task_id)
        total_fee = session.scalar(select(func.coalesce(func.sum(Message.fee), 0)).where(Message.task_id == task_id))
        path = settings.reports_dir.resolve() / f"task-{task_id}-{_slug(notification_task.name)}.xlsx"
        workbook = Workbook(write_only=True)
        query = select(Message).where(Message.task_id == task_id).order_by(Message.id).execution_options(yield_per=2000)
        clicks = clicks_by_message(session, select(Message.id).where(Message.task_id == task_id))
        write_messages(workbook, session.scalars(query), settings.timezone, clicks)

        rejected = workbook.create_sheet("Rejected rows")
        rejected.freeze_panes = "A2"
        header(rejected, REJECTION_COLUMNS)
        for rejection in session.scalars(select(Rejection).where(Rejection.task_id == task_id).order_by(Rejection.row, Rejection.id)):
            append(rejected, [rejection.row, rejection.column, rejection.value, rejection.reason])

        summary = workbook.create_sheet("Summary")
        header(summary, ("notification task", notification_task.name))
        summary.append(["accepted rows", notification_task.accepted])
        summary.append(["rejected rows", notification_task.rejected])
        summary.append(["total fee", Decimal(total_fee or 0)])
        summary.append([])
        summary.append(["status", "messages"])
        for status, number in sorted(counts.items()):
            append(summary, [status, number])
    save(workbook, path)

    with session_scope(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None
        notification_task.report_path = str(path)
        notification_task.counts = counts
        session.add(notification_task)
    return ReportResult(path=str(path), counts=counts, total_fee=str(total_fee))


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name, flags=re.UNICODE).strip("-")[:60] or "task"
