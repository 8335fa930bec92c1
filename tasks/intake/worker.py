"""The per-row work of intake: check a job of task-file rows and build each valid row's message.

Run by the intake's worker processes for a large file (tasks.intake.intake sends them jobs of rows) and in
the intake's own process for a small one. Nothing here imports Prefect, so a worker starts in a
fraction of the time.
"""
from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import literal_column
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlmodel import Session

from models.db import insert_new, json_text
from models.settings import get_settings, settings_environment
from models.status import Channel, MessageStatus
from models.tables import Message
from tasks.compose.cost import fee
from tasks.compose.segment import count, segment
from tasks.compose.shortlinks import shorten
from tasks.intake.parse import Job, job_rows
from tasks.intake.validate import Columns, Directory, RowError, ValidRow, validate_rows

# A worker forked from the fork server runs the program's main module again as __mp_main__ (see
# tasks.intake.intake.Workers.start). The server imported that module already, so when it is part of a package
# (prefect.engine, in a flow run) runpy warns that it is in sys.modules before running it: expected,
# and no concern of whoever reads the flow run's log. The server imports this module first, so its
# workers inherit the filter.
warnings.filterwarnings("ignore", message=r"'[\w.]+' found in sys\.modules after import of package", category=RuntimeWarning,
                        module="runpy")


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
    # The intake's NOTIFLOW_ settings: validation reads a few itself (strict local time, the country
    # zones), and a worker forked from a long-lived fork server may hold older ones.
    environment: Mapping[str, str] = field(default_factory=dict)


# A short-linked message's links: the text stored in its short_links column, and each code with its URL.
RowLinks = tuple[str, list[tuple[str, str]]]


@dataclass
class CheckedJob:
    """A job of rows checked: what a worker sends back, small and quick to pass between processes."""

    # The valid rows' messages, prepared by MessageStore, in row order.
    messages: list[Any] = field(default_factory=list)
    # (index in messages, how many messages the row made, row, unique message id) of the rows that have
    # one: only the storing process sees every row, so only it can refuse a repeat.
    uniques: list[tuple[int, int, int, str]] = field(default_factory=list)
    rejections: list[RowError] = field(default_factory=list)
    links: dict[int, RowLinks] = field(default_factory=dict)


def check_rows(rows: list[tuple[int, list[Any]]], rules: RowRules) -> CheckedJob:
    """Validate rows and build the message of each valid one: the per-row work, which workers share."""
    store = message_store(rules.message_form)
    checked = CheckedJob()
    for result in validate_rows(
        rows, rules.columns, region=rules.region, account_zone=rules.account_zone, default_channel=rules.default_channel,
        default_sender=rules.default_sender, directory=rules.directory,
    ):
        if isinstance(result, ValidRow):
            messages, links = _messages(result, rules)
            if result.unique_message_id is not None:
                checked.uniques.append((len(checked.messages), len(messages), result.row, result.unique_message_id))
            if links:
                checked.links[result.row] = links
            checked.messages.extend(store.prepare(message) for message in messages)
        else:
            checked.rejections.extend(result)
    return checked


class MessageStore:
    """Inserts messages as insert_new does (INSERT … ON CONFLICT DO NOTHING, so stored rows are skipped).

    On SQLite, insert_new's per-row work in SQLAlchemy (each row's parameters built and converted)
    costs more than SQLite's own: there `prepare`, run by the workers, turns a message into the row
    sqlite3 takes, converted by the columns' own SQLAlchemy types, and `insert` hands the rows as they
    are to one executemany whose statement carries the insert's time stamp. Other databases get the
    message dicts through insert_new.
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
        rows: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
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
            session.connection().exec_driver_sql(layout.sql(now), values)

    def _layout(self, keys: tuple[str, ...]) -> _SQLiteLayout | None:
        if keys not in self._layouts:
            self._layouts[keys] = _SQLiteLayout.of(keys, self.STAMPS)
        return self._layouts[keys]


class _SQLiteLayout:
    """insert_new's statement on SQLite for messages with these keys, and how a message becomes its row."""

    # What the stamps' column type makes of a time on SQLite: the only text put into the statement itself.
    _STAMP_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?")

    def __init__(self, keys: tuple[str, ...], names: list[str], dialect: SQLiteDialect_pysqlite, stamps: tuple[str, ...]):
        self.keys, self._names, self._stamps, self._dialect = keys, names, stamps, dialect
        # The dialect's own type of each column, as the compiled statement converts with it.
        converters = [Message.__table__.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
        self._pick = itemgetter(*names)
        # Most values are None, which most columns store as NULL unconverted.
        self._converters = [(position, convert, convert(None) is None) for position, convert in enumerate(converters) if convert is not None]
        stamp_type = Message.__table__.c[stamps[0]].type.dialect_impl(dialect)
        self._convert_stamp = stamp_type.bind_processor(dialect) or str

    @classmethod
    def of(cls, keys: tuple[str, ...], stamps: tuple[str, ...]) -> _SQLiteLayout | None:
        """The layout, or None when SQLAlchemy would add values of its own (column defaults): insert_new then."""
        # JSON columns written as the engine writes them (json.dumps, the default, took ~5% of a worker's time).
        dialect = SQLiteDialect_pysqlite(json_serializer=json_text)
        compiled = sqlite_insert(Message.__table__).on_conflict_do_nothing().compile(dialect=dialect, column_keys=list(keys))
        names = list(compiled.positiontup or [])
        if sorted(names) != sorted(keys) or len(names) < 2 + len(stamps) or not set(stamps) <= set(names):
            return None
        return cls(keys, [name for name in names if name not in stamps], dialect, stamps)

    def values(self, message: dict[str, Any]) -> tuple[Any, ...]:
        row = list(self._pick(message))
        for position, convert, none_stays_none in self._converters:
            value = row[position]
            if value is not None or not none_stays_none:
                row[position] = convert(value)
        return tuple(row)

    def sql(self, now: datetime) -> str:
        """The statement storing rows stamped `now`: the stamps are the same for every row of an insert,
        so they are written into it once rather than bound row by row."""
        stamp = self._convert_stamp(now)
        if not self._STAMP_TEXT.fullmatch(stamp):
            raise ValueError(f"unexpected time stamp text {stamp!r} for SQLite")
        statement = sqlite_insert(Message.__table__).values({name: literal_column(f"'{stamp}'") for name in self._stamps})
        compiled = statement.on_conflict_do_nothing().compile(dialect=self._dialect, column_keys=self._names)
        assert list(compiled.positiontup or []) == self._names, "the statement's parameters are not the rows' values"
        return str(compiled)


@cache
def message_store(form: str) -> MessageStore:
    return MessageStore(form)


def start_worker() -> None:
    # What the worker imported lives as long as it does; checking rows makes no cyclic garbage (100,000
    # rows left none), so the collector runs between jobs now and then, not every 700 allocations.
    gc.freeze()
    gc.disable()
    # A killed intake process (a cancelled or crashed flow run) leaves its workers waiting for jobs
    # forever unless they watch for it.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="watch intake process", daemon=True).start()


def check_in_worker(job: Job, rules: RowRules) -> CheckedJob:
    global _jobs_since_collection
    _use_environment(rules.environment)
    _jobs_since_collection += 1
    if _jobs_since_collection >= 50:
        gc.collect()
        _jobs_since_collection = 0
    return check_rows(job_rows(job), rules)


_jobs_since_collection = 0


def _use_environment(environment: Mapping[str, str]) -> None:
    """Give this process the intake's NOTIFLOW_ settings (see RowRules.environment)."""
    current = settings_environment()
    if current != environment:
        for name in current.keys() - environment.keys():
            del os.environ[name]
        os.environ.update(environment)
        get_settings.cache_clear()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


_CREATED = MessageStatus.CREATED.value
_PRIORITIES = {"high": 0, "normal": 1, "low": 2}


def _messages(row: ValidRow, rules: RowRules) -> tuple[list[dict[str, Any]], RowLinks | None]:
    """The messages a valid row asks for, one per channel of its chain, not yet stamped (see
    MessageStore.insert), and the short links of the one whose text got them (only SMS shortens)."""
    first, links = _message(row, rules, row.channel, row.recipient, row.text, row.sender, row.validity_period, 0, row.required, None)
    messages = [first]
    row_links = (first["short_links"], links) if links else None
    # The cascade's channels so far: a required channel is not one of them (it goes whatever they do).
    before = [] if row.required else [row.channel.value]
    for step, later in enumerate(row.chain, start=1):
        # In a cascade a channel waits for those before it to fail; a required one, or any in parallel, goes at once.
        waits_for = " ".join(before) if row.send_order == "sequential" and not later.required and before else None
        message, links = _message(row, rules, later.channel, later.recipient, later.text, later.sender, later.validity_period,
                                  step, later.required, waits_for)
        messages.append(message)
        if links:
            row_links = (message["short_links"], links)
        if not later.required:
            before.append(later.channel.value)
    return messages, row_links


def _message(
    row: ValidRow, rules: RowRules, channel: Channel, recipient: str, text: str, sender: str, validity_period: int,
    step: int, required: bool, waits_for: str | None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One channel's message of a valid row, and its short links."""
    text, links = sent_text(text, channel, row.use_short_links, smart=rules.smart_encoding, link_base=rules.link_base)
    encoding, _units, parts = count(text)
    message = {
        "task_id": rules.task_id,
        "row": row.row,
        "recipient": recipient,
        "channel": channel.value,
        "sender": sender,
        "text": text,
        "encoding": encoding,
        "parts": parts,
        "fee": fee(channel, parts, rules.prices),
        "status": _CREATED,
        "status_description": f"created, waits for {waits_for} (fallback)" if waits_for else "created, not sent",
        "external_id": row.external_id,
        "bulk_id": row.bulk_id,
        "group_id": row.group_id,
        "flow_id": row.flow_id,
        "variables": row.variables,
        "template_id": row.template_id,
        "template_name": row.template_name,
        "short_links": " ".join(f"{rules.link_base.rstrip('/')}/s/{code}" for code, _url in links) if links else None,
        "time_zone": row.time_zone,
        "validity_period": validity_period,
        "unique_message_id": row.unique_message_id,
        "not_before": row.not_before,
        "windows": row.stored_windows,
        "time_zones": row.stored_time_zones,
        "params": row.params or None,
        "step": step,
        "priority": _PRIORITIES.get((row.params or {}).get("priority") or "normal", 1),
        "send_order": row.send_order,
        "required": required,
        "waits_for": waits_for,
        "attempts": 0,
        "poll_count": 0,
        "created_at": None,
        "status_updated_at": None,
    }
    return message, links


def sent_text(text: str, channel: Channel, use_short_links: bool, *, smart: bool, link_base: str) -> tuple[str, list[tuple[str, str]]]:
    """The text that is sent (and so stored, counted and reported), with the short links it got."""
    links: list[tuple[str, str]] = []
    if use_short_links and channel is Channel.SMS:
        # Only SMS shortens links (spec §7); parts are counted on the shortened text.
        text, links = shorten(text, link_base)
    if smart:
        text = "".join(segment(text, smart=True).parts)
    return text, links
