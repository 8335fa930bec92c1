"""Intake: parse the task file, validate every row and split texts into parts, streaming into the database.

A large file is checked by worker processes, a job of rows each, while this process reads the file
and stores their results in row order; a small one is checked here, which is quicker than starting
workers.
"""
from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlmodel import Session

from models.db import get_engine, insert_new, session_scope
from models.history import log_changes_at, unique_stamp
from models.settings import get_settings
from models.status import Channel, MessageStatus
from models.tables import Message, NotificationTask, Rejection, ShortLink, utcnow
from tasks.cost import fee
from tasks.parse import read_task_file
from tasks.segment import count, segment
from tasks.shortlinks import shorten
from tasks.templates import directory
from tasks.validate import (
    Columns,
    Directory,
    RowError,
    ValidRow,
    keep_first_unique,
    validate_rows,
)

CHUNK_ROWS = 5000
# A file with fewer rows is checked in this process: starting workers (each imports this module,
# about 2 s) costs more than they save. Measured on 2 cores with short rows: 20,000 rows took 1.1 s
# here and 2.3 s with workers started after reading ahead; 50,000 rows (workers started early) 3.5 s
# here and 3.0 s with workers; 200,000 rows 10.9 s and 8.1 s. Tests lower it to use the workers.
POOL_MIN_ROWS = 50_000
# A file this large on disk starts its workers before it is read, so they import while it loads
# (a million-row .xlsx of 25 MB takes about 5 s to load).
POOL_EARLY_BYTES = 1 << 20
# Rows per job sent to a worker, and jobs a worker may have waiting: enough to keep the workers busy
# while this process stores a chunk, few enough that the rows in flight stay a few megabytes.
JOB_ROWS = 2000
JOBS_AHEAD_PER_WORKER = 4
MAX_WORKERS = 4


@dataclass(frozen=True)
class IntakeResult:
    accepted: int
    rejected: int
    unknown_columns: list[str]


@dataclass(frozen=True)
class RowRules:
    """Everything checking a row and building its message needs; sent with each job to a worker."""

    task_id: int
    columns: Columns
    region: str
    account_zone: str
    default_channel: Channel
    default_sender: str
    directory: Directory
    prices: Mapping[str, Decimal]
    smart_encoding: bool
    link_base: str
    # "sqlite" when messages travel as the rows sqlite3 takes (see MessageStore), else "dicts".
    message_form: str


# A short-linked message's links: the text stored in its short_links column, and each code with its URL.
RowLinks = tuple[str, list[tuple[str, str]]]
# A checked row: its result and, for a valid row, its message prepared by MessageStore and its links.
Checked = tuple[ValidRow | list[RowError], Any, RowLinks | None]


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
    return IntakeResult(accepted, rejected, columns.unknown)


def _store_rows(task_id: int, path: str, channels: list[str], workers: Workers) -> Columns:
    """Check every row of the file and store its message or its rejections, a chunk per transaction."""
    settings = get_settings()
    engine = get_engine()
    task_file = read_task_file(path)
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
    )
    store = message_store(rules.message_form)
    built: dict[int, tuple[Any, RowLinks | None]] = {}

    def results(checked: Iterable[Checked]) -> Iterator[ValidRow | list[RowError]]:
        for result, message, row_links in checked:
            if isinstance(result, ValidRow):
                built[result.row] = (message, row_links)
            yield result

    with _collector_paused(), closing(checked_rows(task_file.rows, rules, workers)) as checked:
        outcomes = keep_first_unique(results(checked))
        while chunk := list(islice(outcomes, CHUNK_ROWS)):
            messages: list[Any] = []
            links: dict[int, RowLinks] = {}
            rejections: list[dict[str, Any]] = []
            for outcome in chunk:
                if isinstance(outcome, ValidRow):
                    message, row_links = built.pop(outcome.row)
                    messages.append(message)
                    if row_links is not None:
                        links[outcome.row] = row_links
                else:
                    built.pop(outcome[0].row, None)  # a valid row refused for repeating a unique message id
                    rejections.extend(_rejection(task_id, e) for e in outcome)
            now = unique_stamp()
            with session_scope(engine) as session:
                store.insert(session, messages, now)
                insert_new(session, Rejection, rejections)
                _store_short_links(session, task_id, links)
                log_changes_at(session, now, "intake")
    return columns


def checked_rows(rows: Iterator[tuple[int, list[Any]]], rules: RowRules, workers: Workers) -> Iterator[Checked]:
    """Every row checked, in row order: here for a small file, by the worker processes for a large one."""
    ahead = list(islice(rows, POOL_MIN_ROWS))
    jobs = _jobs(chain(ahead, rows))
    if len(ahead) < POOL_MIN_ROWS or workers.count < 2:
        for job in jobs:
            yield from check_rows(job, rules)
        return
    pool = workers.start()
    pending: deque[Future[list[Checked]]] = deque()
    for job in jobs:
        pending.append(pool.submit(_check_in_worker, job, rules))
        if len(pending) >= workers.count * JOBS_AHEAD_PER_WORKER:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


class Workers:
    """The intake's worker processes, started on demand and stopped by close()."""

    def __init__(self) -> None:
        self.count = min(_cpus(), MAX_WORKERS)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Spawned, not forked: the intake runs in a Prefect flow-run process, which has threads.
            self._pool = ProcessPoolExecutor(
                self.count, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            )
            for _ in range(self.count):  # the executor starts a process per call it is given
                self._pool.submit(os.getpid)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def check_rows(rows: list[tuple[int, list[Any]]], rules: RowRules) -> list[Checked]:
    """Validate rows and build the message of each valid one: the per-row work, which workers share."""
    store = message_store(rules.message_form)
    checked: list[Checked] = []
    for result in validate_rows(
        rows, rules.columns, region=rules.region, account_zone=rules.account_zone, default_channel=rules.default_channel,
        default_sender=rules.default_sender, directory=rules.directory,
    ):
        if isinstance(result, ValidRow):
            links: dict[int, list[tuple[str, str]]] = {}
            # No `now` yet: MessageStore.insert stamps the message with the time of the insert that stores it.
            message = _message(rules.task_id, result, None, rules.prices, rules.smart_encoding, rules.link_base, links)
            row_links = (message["short_links"], links[result.row]) if result.row in links else None
            checked.append((result, store.prepare(message), row_links))
        else:
            checked.append((result, None, None))
    return checked


class MessageStore:
    """Inserts messages as insert_new does (INSERT … ON CONFLICT DO NOTHING, so stored rows are skipped).

    On SQLite, insert_new's per-row work in SQLAlchemy (each row's parameters built and converted)
    costs more than SQLite's own: there `prepare`, run by the workers, turns a message into the row
    sqlite3 takes, converted by the columns' own SQLAlchemy types, and `insert` only stamps the rows
    and hands them to one executemany. Other databases get the message dicts through insert_new.
    """

    STAMPS = ("created_at", "status_updated_at")

    def __init__(self, form: str):
        self.form = form
        self._layouts: dict[tuple[str, ...], _SQLiteLayout | None] = {}

    def prepare(self, message: dict[str, Any]) -> Any:
        """The message as it travels to the process that stores it."""
        if self.form != "sqlite":
            return message
        keys = tuple(message)
        layout = self._layouts.get(keys) or self._layout(keys)
        return message if layout is None else (layout.keys, layout.values(message))

    def insert(self, session: Session, prepared: list[Any], now: Any) -> None:
        """Store prepared messages, stamped `now` (the stamp log_changes_at finds them by)."""
        dicts: list[dict[str, Any]] = []
        rows: dict[tuple[str, ...], list[list[Any]]] = {}
        for message in prepared:
            if isinstance(message, dict):
                message.update(dict.fromkeys(self.STAMPS, now))
                dicts.append(message)
            else:
                rows.setdefault(message[0], []).append(message[1])
        insert_new(session, Message, dicts)
        for keys, values in rows.items():
            layout = self._layout(keys)
            assert layout is not None
            stamp = layout.stamp(now)
            for row in values:
                for position in layout.stamp_positions:
                    row[position] = stamp
            session.connection().exec_driver_sql(layout.sql, [tuple(row) for row in values])

    def _layout(self, keys: tuple[str, ...]) -> _SQLiteLayout | None:
        if keys not in self._layouts:
            self._layouts[keys] = _SQLiteLayout.of(keys, self.STAMPS)
        return self._layouts[keys]


class _SQLiteLayout:
    """insert_new's statement on SQLite for messages with these keys, and how a message becomes its row."""

    def __init__(self, keys: tuple[str, ...], sql: str, names: list[str], dialect: SQLiteDialect_pysqlite, stamps: tuple[str, ...]):
        # The dialect's own type of each column, as the compiled statement converts with it.
        converters = [Message.__table__.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
        self.keys, self.sql = keys, sql
        self._pick = itemgetter(*names)
        self.stamp_positions = [names.index(name) for name in stamps]
        self._convert_stamp = converters[self.stamp_positions[0]] or (lambda value: value)
        # The stamps are set later; most other values are None, which most columns store as NULL unconverted.
        self._converters = [
            (position, convert, convert(None) is None) for position, convert in enumerate(converters)
            if convert is not None and position not in self.stamp_positions
        ]

    @classmethod
    def of(cls, keys: tuple[str, ...], stamps: tuple[str, ...]) -> _SQLiteLayout | None:
        """The layout, or None when SQLAlchemy would add values of its own (column defaults): insert_new then."""
        dialect = SQLiteDialect_pysqlite()
        compiled = sqlite_insert(Message.__table__).on_conflict_do_nothing().compile(dialect=dialect, column_keys=list(keys))
        names = list(compiled.positiontup or [])
        if sorted(names) != sorted(keys) or len(names) < 2 or not set(stamps) <= set(names):
            return None
        return cls(keys, str(compiled), names, dialect, stamps)

    def values(self, message: dict[str, Any]) -> list[Any]:
        row = list(self._pick(message))
        for position, convert, none_stays_none in self._converters:
            value = row[position]
            if value is not None or not none_stays_none:
                row[position] = convert(value)
        return row

    def stamp(self, now: Any) -> Any:
        return self._convert_stamp(now)


@cache
def message_store(form: str) -> MessageStore:
    return MessageStore(form)


def _jobs(rows: Iterator[tuple[int, list[Any]]]) -> Iterator[list[tuple[int, list[Any]]]]:
    while job := list(islice(rows, JOB_ROWS)):
        yield job


def _cpus() -> int:
    """The cores this process may run on (fewer than the machine's under a container's CPU set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker() -> None:
    # What the worker imported lives as long as it does; checking rows makes no cyclic garbage (100,000
    # rows left none), so the collector runs between jobs now and then, not every 700 allocations.
    gc.freeze()
    gc.disable()
    # A killed intake process (a cancelled or crashed flow run) leaves its workers waiting for jobs
    # forever unless they watch for it.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="watch intake process", daemon=True).start()


def _check_in_worker(rows: list[tuple[int, list[Any]]], rules: RowRules) -> list[Checked]:
    global _jobs_since_collection
    _jobs_since_collection += 1
    if _jobs_since_collection >= 50:
        gc.collect()
        _jobs_since_collection = 0
    return check_rows(rows, rules)


_jobs_since_collection = 0


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


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


def _message(
    task_id: int, row: ValidRow, now: Any, prices: Mapping[str, Decimal], smart: bool,
    link_base: str, links: dict[int, list[tuple[str, str]]],
) -> dict[str, Any]:
    text, row_links = sent_text(row, smart=smart, link_base=link_base)
    if row_links:
        links[row.row] = row_links
    encoding, _units, parts = count(text)
    return {
        "task_id": task_id,
        "row": row.row,
        "recipient": row.recipient,
        "channel": row.channel.value,
        "sender": row.sender,
        "text": text,
        "encoding": encoding,
        "parts": parts,
        "fee": fee(row.channel, parts, prices),
        "status": MessageStatus.CREATED.value,
        "status_description": "created, not sent",
        "external_id": row.external_id,
        "bulk_id": row.bulk_id,
        "group_id": row.group_id,
        "flow_id": row.flow_id,
        "variables": row.variables,
        "template_id": row.template_id,
        "template_name": row.template_name,
        "short_links": " ".join(f"{link_base.rstrip('/')}/s/{code}" for code, _url in links.get(row.row, [])) or None,
        "time_zone": row.time_zone,
        "validity_period": row.validity_period,
        "unique_message_id": row.unique_message_id,
        "not_before": row.not_before,
        "windows": row.stored_windows,
        "time_zones": row.stored_time_zones,
        "params": row.params or None,
        "attempts": 0,
        "poll_count": 0,
        "created_at": now,
        "status_updated_at": now,
    }


def sent_text(row: ValidRow, *, smart: bool, link_base: str) -> tuple[str, list[tuple[str, str]]]:
    """The text that is sent (and so stored, counted and reported), with the short links it got."""
    text, links = row.text, []
    if row.use_short_links and row.channel is Channel.SMS:
        # Only SMS shortens links (spec §7); parts are counted on the shortened text.
        text, links = shorten(text, link_base)
    if smart:
        text = "".join(segment(text, smart=True).parts)
    return text, links


def _store_short_links(session: Any, task_id: int, links: dict[int, RowLinks]) -> None:
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
