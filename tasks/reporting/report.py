"""Build report: the notification task's Excel file, one row per message, plus its rejected rows."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import groupby
from decimal import Decimal

from openpyxl import Workbook
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select
from sqlmodel import Session

from models.db import get_engine, session_scope
from models.settings import get_settings
from models.status import DELIVERED_STATUSES
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

        outcomes = _write_chains(workbook, session, task_id)

        summary = workbook.create_sheet("Summary")
        header(summary, ("notification task", notification_task.name))
        summary.append(["accepted rows", notification_task.accepted])
        summary.append(["rejected rows", notification_task.rejected])
        summary.append(["total fee", Decimal(total_fee or 0)])
        summary.append([])
        summary.append(["status", "messages"])
        for status, number in sorted(counts.items()):
            append(summary, [status, number])
        if outcomes:
            summary.append([])
            summary.append(["fallback chain", "outcome", "rows"])
            for (chain, outcome), number in sorted(outcomes.items()):
                append(summary, [chain, outcome, number])
    save(workbook, path)

    with session_scope(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None
        notification_task.report_path = str(path)
        notification_task.counts = counts
        session.add(notification_task)
    return ReportResult(path=str(path), counts=counts, total_fee=str(total_fee))


CHAIN_COLUMNS = ("row", "channels in order", "statuses in order", "delivered by")


def _write_chains(workbook: Workbook, session: Session, task_id: int) -> Counter[tuple[str, str]]:
    """The "Fallback" sheet: each row of several channels with every channel's status in the order
    tried (spec §4), when the task has such rows; returns how many rows each chain ended how."""
    query = (
        select(Message.row, Message.channel, Message.status, Message.required)
        .where(Message.task_id == task_id, Message.send_order.is_not(None))
        .order_by(Message.row, Message.step)
        .execution_options(yield_per=5000)
    )
    outcomes: Counter[tuple[str, str]] = Counter()
    sheet = None
    for row, steps in groupby(session.execute(query), key=lambda step: step.row):
        steps = list(steps)
        if sheet is None:
            sheet = workbook.create_sheet("Fallback")
            sheet.freeze_panes = "A2"
            header(sheet, CHAIN_COLUMNS)
        chain = " → ".join(step.channel + (" (required)" if step.required else "") for step in steps)
        delivered = [step.channel for step in steps if step.status in DELIVERED_STATUSES]
        append(sheet, [row, chain, " → ".join(step.status for step in steps), ", ".join(delivered)])
        outcomes[chain, f"delivered by {', '.join(delivered)}" if delivered else "not delivered (yet)"] += 1
    return outcomes


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name, flags=re.UNICODE).strip("-")[:60] or "task"
