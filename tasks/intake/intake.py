"""Intake: parse the task file, validate every row and split texts into parts, streaming into the database.

A large file is checked by worker processes, a job of rows each, while this process reads the file
and stores their results in row order; a small one is checked here, which is quicker than starting
workers.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, insert, select
from sqlmodel import Session

from models.db import get_engine, insert_new, session_scope
from models.history import log_changes_at, unique_stamp
from models.settings import get_settings, settings_environment
from models.status import Channel
from models.tables import Message, NotificationTask, Rejection, ShortLink, utcnow
from tasks.compose.templates import directory
from tasks.intake.parse import Job, job_rows, job_size, read_task_file
from tasks.intake.sheet_pieces import forget_pieces
from tasks.intake.task_file import discard_stored_file
from tasks.intake.validate import Columns, FirstUnique, RowError
from tasks.intake.worker import (
    CheckedJob,
    RowLinks,
    RowRules,
    check_in_worker,
    check_rows,
    message_store,
    start_worker,
)

CHUNK_ROWS = 5000
# A file with fewer rows is checked in this process: starting workers costs more than they save.
# Measured on 2 cores with short rows, with spawned workers that imported Prefect (about 2 s each):
# 20,000 rows took 1.1 s here and 2.3 s with workers started after reading ahead; 50,000 rows
# (workers started early) 3.5 s here and 3.0 s with workers; 200,000 rows 10.9 s and 8.1 s. Workers
# now start quicker (see Workers.start), so the bound is cautious. Tests lower it to use the workers.
POOL_MIN_ROWS = 50_000
# A file this large on disk starts its workers before it is read, so they import while it loads
# (a million-row .xlsx of 25 MB takes about 5 s to load).
POOL_EARLY_BYTES = 1 << 20
# Jobs a worker may have waiting (a job is about 2,000 rows, tasks.intake.parse): enough to keep the workers
# busy while this process stores a chunk, few enough that the rows in flight stay a few megabytes.
JOBS_AHEAD_PER_WORKER = 4
MAX_WORKERS = 4


@dataclass(frozen=True)
class IntakeResult:
    accepted: int
    rejected: int
    unknown_columns: list[str]


@task(name="parse and validate", cache_policy=NO_CACHE)
def intake(task_id: int) -> IntakeResult:
    """Store every accepted row as a CREATED message and every refused one as a rejection.

    Safe to run again: a finished intake is not repeated, and a half-finished one (a killed process)
    goes on where it stopped, because rows already stored are skipped by their unique key.
    """
    engine = get_engine()
    with Session(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None, f"notification task {task_id} does not exist"
        if notification_task.ingested_at is not None:
            return IntakeResult(notification_task.accepted, notification_task.rejected, notification_task.unknown_columns)
        path, channels = notification_task.file, notification_task.channels

    workers = Workers()
    with closing(workers):
        if workers.count > 1 and Path(path).is_file() and Path(path).stat().st_size >= POOL_EARLY_BYTES:
            workers.start()
        columns = _store_rows(task_id, path, channels, workers)

    with session_scope(engine) as session:
        accepted = session.scalar(select(func.count()).select_from(Message).where(Message.task_id == task_id)) or 0
        rejected = session.scalar(
            select(func.count(func.distinct(Rejection.row))).where(Rejection.task_id == task_id)
        ) or 0
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None
        notification_task.accepted, notification_task.rejected = accepted, rejected
        notification_task.unknown_columns = columns.unknown
        notification_task.ingested_at = utcnow()
        session.add(notification_task)
    discard_stored_file(path)  # the rows are stored: a re-run reads them, not the file
    return IntakeResult(accepted, rejected, columns.unknown)


def _store_rows(task_id: int, path: str, channels: list[str], workers: Workers) -> Columns:
    """Check every row of the file and store its message or its rejections, a chunk per transaction."""
    settings = get_settings()
    engine = get_engine()
    with read_task_file(path) as task_file:
        columns = Columns.from_header(task_file.header)
        rules = RowRules(
            task_id=task_id,
            columns=columns,
            region=settings.default_region,
            account_zone=settings.timezone,
            default_channel=Channel(channels[0]),
            default_sender=settings.sms_sender,
            directory=directory(),
            prices=settings.prices,
            smart_encoding=settings.smart_encoding,
            link_base=settings.public_url or settings.api_url,
            message_form="sqlite" if (engine.dialect.name, engine.dialect.driver) == ("sqlite", "pysqlite") else "dicts",
            environment=settings_environment(),
        )
        store = message_store(rules.message_form)
        first = FirstUnique()
        messages: list[Any] = []
        rejections: list[RowError] = []
        links: dict[int, RowLinks] = {}

        def flush() -> None:
            now = unique_stamp()
            with session_scope(engine) as session:
                store.insert(session, messages, now)
                insert_new(session, Rejection, [_rejection(task_id, e) for e in rejections])
                store_short_links(session, task_id, links)
                log_changes_at(session, now, "intake")
            messages.clear()
            rejections.clear()
            links.clear()

        with _collector_paused(), closing(checked_jobs(task_file.jobs, rules, workers)) as jobs:
            for job in jobs:
                repeats = set()
                for index, count, row, unique_message_id in job.uniques:
                    error = first.duplicate(row, unique_message_id)
                    if error is not None:
                        repeats.update(range(index, index + count))
                        rejections.append(error)
                        job.links.pop(row, None)
                if repeats:
                    messages.extend(m for i, m in enumerate(job.messages) if i not in repeats)
                else:  # nearly every job: no per-message step in this process, the busiest one
                    messages.extend(job.messages)
                rejections.extend(job.rejections)
                links.update(job.links)
                if len(messages) + len(rejections) >= CHUNK_ROWS:
                    flush()
            if messages or rejections:
                flush()
        return columns


def checked_jobs(jobs: Iterator[Job], rules: RowRules, workers: Workers) -> Iterator[CheckedJob]:
    """Every row checked, a job at a time in row order: here for a small file, by the worker processes for a large one."""
    ahead: list[Job] = []
    rows_ahead = 0
    for job in jobs:
        ahead.append(job)
        rows_ahead += job_size(job)
        if rows_ahead >= POOL_MIN_ROWS:
            break
    jobs = chain(ahead, jobs)
    if rows_ahead < POOL_MIN_ROWS or workers.count < 2:
        for job in jobs:
            yield check_rows(job_rows(job), rules)
        return
    forget_pieces()  # the workers read the sheet's pieces from here on, not this process
    pool = workers.start()
    pending: deque[Future[CheckedJob]] = deque()
    for job in jobs:
        pending.append(pool.submit(check_in_worker, job, rules))
        if len(pending) >= workers.count * JOBS_AHEAD_PER_WORKER:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class Workers:
    """The intake's worker processes, started on demand and stopped by close()."""

    def __init__(self) -> None:
        self.count = min(_cpus(), MAX_WORKERS)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Workers are forked from a fork server, not from this process (a Prefect flow-run process
            # has threads) and not spawned: a spawned worker imports the program's main module again,
            # which in a flow run is Prefect's engine, seconds of CPU for each worker. The fork server
            # imports it and the row checking once; a worker still runs the main module's own lines
            # (as __mp_main__), but everything they import is loaded already.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_worker_preload())
            self._pool = ProcessPoolExecutor(self.count, mp_context=context, initializer=start_worker)
            for _ in range(self.count):  # the executor starts a process per call it is given
                self._pool.submit(os.getpid)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _worker_preload() -> list[str]:
    """What the fork server imports for its workers: the main module when it was run by name (-m), as a
    worker would import it again, and the row checking."""
    main = getattr(sys.modules["__main__"], "__spec__", None)
    run_by_name = main is not None and main.name != "__main__" and not main.name.endswith(".__main__")
    # The row checking first: it quiets runpy's warning about the main module (see tasks.intake.worker).
    return ["tasks.intake.worker", main.name] if run_by_name else ["tasks.intake.worker"]


def _cpus() -> int:
    """The cores this process may run on (fewer than the machine's under a container's CPU set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the intake runs: with results of thousands of rows in flight,
    the collector walked them over and over (about a third of this process's time). The intake makes
    little cyclic garbage; what there is goes at the next collection after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def store_short_links(session: Any, task_id: int, links: dict[int, RowLinks]) -> None:
    """Store the links of the messages this chunk really inserted: a re-run's rows are stored already,
    with the codes in their stored text, and get no second set."""
    if not links:
        return
    stored = session.execute(
        select(Message.id, Message.row, Message.short_links).where(Message.task_id == task_id, Message.row.in_(list(links)))
    ).all()
    rows = [
        {"code": code, "message_id": message_id, "url": url, "clicks": 0, "created_at": utcnow()}
        for message_id, row, short_links in stored if short_links == links[row][0]
        for code, url in links[row][1]
    ]
    if rows:
        session.execute(insert(ShortLink), rows)


def _rejection(task_id: int, error: RowError) -> dict[str, Any]:
    return {"task_id": task_id, "row": error.row, "column": error.column, "code": error.code, "value": error.value, "reason": error.reason}
