"""What a person watching a campaign in the Prefect UI sees: a progress bar, a table of counts per channel
and status, and at the end a summary with totals, cost, rejection reasons, delivery rates and a funnel."""
from __future__ import annotations

import time

from collections import Counter
from decimal import Decimal
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from sqlalchemy import func, select
from sqlmodel import Session

from models.db import get_engine
from models.signing import signed_link
from models.status import DELIVERED_STATUSES, FINAL_STATUSES, HANDED_STATUSES, MessageStatus
from models.tables import Message, NotificationTask, Rejection
from tasks.reporting.markdown import escape

_progress_ids: dict[int, Any] = {}


def artifact_key(task_id: int, what: str) -> str:
    """Stable per task, so the UI's artifact pages show the latest version of each."""
    return f"notification-task-{task_id}-{what}"


def _counts(session: Session, task_id: int) -> list[tuple[str, str, int]]:
    return [
        (channel, status, number)
        for channel, status, number in session.execute(
            select(Message.channel, Message.status, func.count())
            .where(Message.task_id == task_id)
            .group_by(Message.channel, Message.status)
            .order_by(Message.channel, Message.status)
        ).all()
    ]


PROGRESS_SECONDS = 2.0
_published_at: dict[int, float] = {}


def publish_progress(task_id: int, *, with_counts: bool = False) -> None:
    """Update the task's progress artifact (share of messages with a final status); with `with_counts`,
    also a new version of its counts table (at milestones, not every batch: each is a card in the UI).

    The bar moves at most every PROGRESS_SECONDS (longer for a task whose count is slow): counting a task's messages by status after every
    batch of a fast dispatch took half its time (a 100,000-message campaign counted 100,000 rows 50 times).
    """
    now = time.monotonic()
    if not with_counts and now < _published_at.get(task_id, -1.0):
        return
    with Session(get_engine()) as session:
        counts = _counts(session, task_id)
    # A count that took long (a million messages) is not repeated for twenty times as long, so the bar never
    # takes more than a twentieth of the run's time.
    _published_at[task_id] = now + max(PROGRESS_SECONDS, 20 * (time.monotonic() - now))
    total = sum(n for _c, _s, n in counts)
    final = sum(n for _c, s, n in counts if MessageStatus(s) in FINAL_STATUSES)
    handed = sum(n for _c, s, n in counts if MessageStatus(s) in HANDED_STATUSES)
    percent = 100.0 * final / total if total else 0.0
    description = f"{handed} of {total} messages sent, {final} with a final status"
    if task_id in _progress_ids:
        update_progress_artifact(_progress_ids[task_id], percent, description=description)
    else:
        _progress_ids[task_id] = create_progress_artifact(percent, key=artifact_key(task_id, "progress"), description=description)
    if not with_counts:
        return
    by_channel: dict[str, Counter[str]] = {}
    for channel, status, number in counts:
        by_channel.setdefault(channel, Counter())[status] = number
    statuses = sorted({s for _c, s, _n in counts}, key=lambda s: (MessageStatus(s).rank, s))
    table = [{"channel": channel, **{s: row.get(s, 0) for s in statuses}, "total": sum(row.values())} for channel, row in by_channel.items()]
    create_table_artifact(table, key=artifact_key(task_id, "counts"), description="Messages per channel and status")


def publish_summary(task_id: int) -> str:
    """The closing markdown summary; returns its text."""
    with Session(get_engine()) as session:
        task = session.get(NotificationTask, task_id)
        assert task is not None
        counts = _counts(session, task_id)
        fee = session.scalar(select(func.coalesce(func.sum(Message.fee), 0)).where(Message.task_id == task_id)) or Decimal(0)
        parts = session.scalar(select(func.coalesce(func.sum(Message.parts), 0)).where(Message.task_id == task_id)) or 0
        reasons = session.execute(
            select(Rejection.reason, func.count()).where(Rejection.task_id == task_id)
            .group_by(Rejection.reason).order_by(func.count().desc()).limit(5)
        ).all()
    lines = [
        f"# {escape(task.name)}",
        "",
        f"**{task.accepted}** rows accepted, **{task.rejected}** rejected · **{parts}** SMS parts · cost **{Decimal(fee):.2f}**",
        "",
        "| channel | messages | sent | delivered | delivery rate |",
        "|---|---:|---:|---:|---:|",
    ]
    by_channel: dict[str, Counter[str]] = {}
    for channel, status, number in counts:
        by_channel.setdefault(channel, Counter())[status] = number
    for channel, row in by_channel.items():
        sent = sum(n for s, n in row.items() if MessageStatus(s) in HANDED_STATUSES)
        delivered = sum(row.get(s.value, 0) for s in DELIVERED_STATUSES)
        rate = f"{100 * delivered / sent:.1f} %" if sent else "—"
        lines.append(f"| {channel} | {sum(row.values())} | {sent} | {delivered} | {rate} |")
    lines += ["", "| status | messages |", "|---|---:|"]
    lines += [f"| {status} | {number} |" for _c, status, number in counts]
    if reasons:
        lines += ["", "**Top rejection reasons**", ""]
        lines += [f"- {number} × {escape(reason)}" for reason, number in reasons]
    lines += [
        "",
        f"![delivery funnel]({signed_link(f'/v1/tasks/{task_id}/funnel.svg')})",
        "",
        f"[Download the Excel report]({signed_link(f'/v1/tasks/{task_id}/report.xlsx')}) · on the server: `{task.report_path}`",
    ]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key=artifact_key(task_id, "summary"), description=f"Summary of {escape(task.name)}")
    return markdown
