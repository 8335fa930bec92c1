"""Follows notification-task runs to their end on the terminal, reading progress from the database."""
from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import func, select

from deployments.runs import ui_url
from flows.wait import WAITING_STATES
from models.db import session_scope
from models.errors import NotiflowError
from models.status import FINAL_STATUSES
from models.tables import Message, NotificationTask, Rejection
from tasks.reporting.counts import status_counts


def follow(
    flow_run_id: UUID, *, console: Console | None, timeout: float | None = None, stop_when_waiting: bool = True
) -> FlowRun:
    """Wait until the run ends, or starts waiting for a later window or poll (unless told to wait that out too),
    showing a progress bar on `console`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    progress = None
    if console is not None:
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        bar = progress.add_task("Scheduled", total=None, detail="")
        progress.start()
    try:
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(flow_run_id)
                state = run.state
                if progress is not None and state is not None:
                    done, total, detail = _progress(str(flow_run_id))
                    progress.update(bar, description=state.name, completed=done, total=total or None, detail=detail)
                if state is not None and (state.is_final() or (stop_when_waiting and state.is_scheduled() and state.name in WAITING_STATES)):
                    return run
                if deadline is not None and time.monotonic() > deadline:
                    raise NotiflowError(f"flow run {flow_run_id} did not end within {timeout:.0f} s; see {ui_url(flow_run_id)}")
                time.sleep(1.0)
    finally:
        if progress is not None:
            progress.stop()


def _progress(flow_run_id: str) -> tuple[int, int, str]:
    with session_scope() as session:
        task = session.scalar(select(NotificationTask).where(NotificationTask.flow_run_id == flow_run_id))
        if task is None:
            return 0, 0, "starting"
        done = session.scalar(
            select(func.count()).where(Message.task_id == task.id, Message.status.in_([s.value for s in FINAL_STATUSES]))
        ) or 0
        sent = session.scalar(
            select(func.count()).where(Message.task_id == task.id, Message.provider_message_id.is_not(None))
        ) or 0
    if task.ingested_at is None:
        return 0, 0, "reading the task file"
    return done, task.accepted, f"{sent} sent, {done} final"


def summary(run: FlowRun) -> dict[str, Any]:
    """`notiflow run --json`'s shape (a stable contract)."""
    with session_scope() as session:
        task = session.scalar(select(NotificationTask).where(NotificationTask.flow_run_id == str(run.id)))
        counts: dict[str, int] = {}
        rejected = 0
        if task is not None:
            counts = status_counts(session, task.id)
            rejected = session.scalar(select(func.count(func.distinct(Rejection.row))).where(Rejection.task_id == task.id)) or 0
    state = run.state
    return {
        "task_id": task.id if task else None,
        "flow_run_id": str(run.id),
        "state": state.type.value if state else None,
        "state_name": state.name if state else None,
        "state_message": state.message if state else None,
        "counts": dict(sorted(counts.items())),
        "rejected": rejected,
        "report": task.report_path if task else None,
        "ui_url": ui_url(run.id),
    }


def rejections(task_id: int, limit: int | None = None) -> list[Rejection]:
    with session_scope() as session:
        query = select(Rejection).where(Rejection.task_id == task_id).order_by(Rejection.row, Rejection.id)
        if limit:
            query = query.limit(limit)
        return list(session.scalars(query))


def chain_statuses(task_id: int) -> dict[tuple[str, str], int]:
    """How many messages of the task's fallback chains ended in each status, per channel, in chain order."""
    with session_scope() as session:
        rows = session.execute(
            select(Message.channel, Message.status, func.count(), func.min(Message.step))
            .where(Message.task_id == task_id, Message.send_order.is_not(None))
            .group_by(Message.channel, Message.status)
        ).all()
    return {(channel, status): number for channel, status, number, _step in sorted(rows, key=lambda r: (r[3], r[0], r[1]))}
