"""Intake for the HTTP API: the notifications of one POST /v1/messages become messages of the token's API task
of the day, checked by the very row validation a task file's rows go through, and scheduled at once.

Each notification is a task-file row whose cells are its fields (`{"phone": …, "text": …}` is the row
phone | text), so an API client and a file get the same checks and the same reasons. A request is all or
nothing: one refused notification refuses it, with every reason of every one. The API task is an ordinary
notification task (flagged by its token), so history, reports, callbacks and fallback chains treat its
messages as any others; the api-dispatcher flow sends them (flows/api_dispatcher.py).
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlmodel import Session

from models.db import insert_new, session_scope
from models.history import log_changes_at, unique_stamp
from models.settings import get_settings, settings_environment
from models.status import Channel, MessageStatus, TaskState
from models.tables import Message, NotificationTask, utcnow
from tasks.compose.templates import directory
from tasks.intake.intake import store_short_links
from tasks.intake.validate import Columns, RowError
from tasks.intake.worker import RowRules, check_rows, message_store
from tasks.schedule.schedule import schedule_new


@dataclass(frozen=True)
class PlannedMessage:
    """One channel's message of a notification, as scheduled."""

    id: int
    channel: str
    step: int
    status: str
    scheduled_at: datetime | None
    expires_at: datetime | None
    waits_for: str | None


@dataclass(frozen=True)
class Accepted:
    """What became of one notification of the request: its messages (one per channel of its chain), new or
    found again by its unique message id."""

    item: int
    task_id: int
    row: int
    unique_message_id: str | None
    duplicate: bool
    messages: list[PlannedMessage]


@dataclass
class NotificationsRefused(Exception):
    """Some notifications of the request were not valid: each problem, by the notification's place (0-based)."""

    problems: list[tuple[int, RowError]] = field(default_factory=list)


def unique_key(token_id: int, unique_message_id: str) -> str:
    """What a unique message id is stored and looked up by: per token, and short enough to index."""
    return hashlib.sha256(f"{token_id}\x00{unique_message_id}".encode()).hexdigest()


def api_day(now: datetime | None = None) -> str:
    """Today in the account's zone: the day an API message's task is for."""
    return (now or utcnow()).astimezone(ZoneInfo(get_settings().timezone)).date().isoformat()


def api_task(token_id: int, token_name: str, day: str | None = None) -> int:
    """The id of the token's API task of `day` (today), created on its first message."""
    day = day or api_day()
    with session_scope() as session:
        found = _api_task_id(session, token_id, day)
        if found is not None:
            return found
        now = utcnow()
        # Two requests may both start the day: the unique index keeps one task, the other insert does nothing.
        insert_new(session, NotificationTask, [{
            "uid": uuid.uuid4().hex, "name": f"API {token_name} {day}", "file": "", "source_file": "POST /v1/messages",
            "windows": [], "channels": [Channel.SMS.value], "dry_run": False, "state": TaskState.IN_PROGRESS.value,
            "state_description": "messages sent through the HTTP API", "counts": {}, "accepted": 0, "rejected": 0,
            "unknown_columns": [], "created_at": now, "ingested_at": now, "started_at": now,
            "api_token_id": token_id, "api_day": day,
        }])
        created = _api_task_id(session, token_id, day)
    assert created is not None
    return created


def _api_task_id(session: Session, token_id: int, day: str) -> int | None:
    return session.scalar(select(NotificationTask.id).where(NotificationTask.api_token_id == token_id, NotificationTask.api_day == day))


def accept_notifications(
    token_id: int, token_name: str, notifications: Sequence[Mapping[str, Any]],
    remember: Callable[[Session, list[Accepted]], None] | None = None,
) -> list[Accepted]:
    """Store and schedule the notifications (each a mapping of task-file column name to cell value) in the
    token's API task of today, or raise NotificationsRefused with every problem and store nothing.

    A notification whose unique message id the token used before (in any of its API tasks, or earlier in
    this request) creates nothing: it is answered with the first one's messages. `remember` runs in the
    same transaction as the insert (the request's Idempotency-Key is stored with what it created).
    """
    empty = [(item, RowError(item + 1, "text", "empty_notification", "", "is empty; give a recipient and a text or a template id"))
             for item, cells in enumerate(notifications) if not any(v is not None for v in cells.values())]
    if empty:
        raise NotificationsRefused(empty)
    names = sorted({name for cells in notifications for name in cells})
    columns = Columns(index={name: position for position, name in enumerate(names)})
    # Checked as rows 1…n; each gets its row of the task once the request is known to be valid.
    rows = [(item + 1, [cells.get(name) for name in names]) for item, cells in enumerate(notifications)]
    checked = check_rows(rows, _rules(columns))
    if checked.rejections:
        raise NotificationsRefused([(error.row - 1, error) for error in checked.rejections])
    task_id = api_task(token_id, token_name)  # only a valid request starts the day's task

    by_row: dict[int, list[dict[str, Any]]] = {}
    for message in checked.messages:
        message["unique_key"] = None  # every message has the same keys: one executemany inserts them all
        by_row.setdefault(message["row"], []).append(message)
    unique_ids = {row: uid for _index, _count, row, uid in checked.uniques}
    first_of: dict[str, int] = {}  # unique key → the first row of this request that has it
    for row, uid in sorted(unique_ids.items()):
        key = unique_key(token_id, uid)
        first_of.setdefault(key, row)
        for message in by_row[row]:
            message["unique_key"] = key

    with session_scope() as session:
        known = _rows_by_key(session, list(first_of))
    new_rows = [row for row in sorted(by_row) if row not in unique_ids or
                (first_of[unique_key(token_id, unique_ids[row])] == row and unique_key(token_id, unique_ids[row]) not in known)]
    # Rows are numbered in a transaction of their own: the task's row stays locked for a moment, not for the
    # whole insert (a request that fails after it leaves a gap in the numbers, nothing else).
    with session_scope() as session:
        placed = _place(session, task_id, new_rows)
    with session_scope() as session:
        messages = [message | {"task_id": task_id, "row": placed[row]} for row in new_rows for message in by_row[row]]
        now = unique_stamp()
        message_store("dicts").insert(session, messages, now)
        store_short_links(session, task_id, {placed[row]: links for row, links in checked.links.items() if row in placed})
        log_changes_at(session, now, "api")
        if placed:
            schedule_new(session, task_id, Message.row.in_(list(placed.values())), utcnow())
        # A request at the same moment may have stored one of these unique ids first (its insert won, ours did nothing).
        known = _rows_by_key(session, list(first_of))
        results = _answers(session, token_id, task_id, notifications, unique_ids, placed, known)
        if remember is not None:
            remember(session, results)
    return results


def _rules(columns: Columns) -> RowRules:
    """The rules a task file's rows are checked by; the messages get their task and row once they are stored."""
    settings = get_settings()
    return RowRules(
        task_id=0, columns=columns, region=settings.default_region, account_zone=settings.timezone,
        default_channel=Channel.SMS, default_sender=settings.sms_sender, directory=directory(), prices=settings.prices,
        smart_encoding=settings.smart_encoding, link_base=settings.public_url or settings.api_url, message_form="dicts",
        environment=settings_environment(),
    )


def _rows_by_key(session: Session, keys: list[str]) -> dict[str, tuple[int, int]]:
    """The (task, row) of the first channel's message stored under each unique key."""
    if not keys:
        return {}
    found = session.execute(
        select(Message.unique_key, Message.task_id, Message.row).where(Message.unique_key.in_(keys), Message.step == 0)
    ).all()
    return {key: (task_id, row) for key, task_id, row in found}


def _place(session: Session, task_id: int, rows: list[int]) -> dict[int, int]:
    """Give the request's new rows the task's next row numbers: the task's count of accepted rows is the
    counter (one UPDATE, so concurrent requests never get the same rows)."""
    if not rows:
        return {}
    last = session.execute(
        update(NotificationTask).where(NotificationTask.id == task_id)
        .values(accepted=NotificationTask.accepted + len(rows)).returning(NotificationTask.accepted)
    ).scalar_one()
    first = last - len(rows) + 1
    return {row: first + offset for offset, row in enumerate(rows)}


def _answers(
    session: Session, token_id: int, task_id: int, notifications: Sequence[Mapping[str, Any]], unique_ids: dict[int, str],
    placed: dict[int, int], known: dict[str, tuple[int, int]],
) -> list[Accepted]:
    where: dict[int, tuple[int, int, bool]] = {}
    for item in range(len(notifications)):
        row = item + 1
        uid = unique_ids.get(row)
        stored = known.get(unique_key(token_id, uid)) if uid is not None else None
        if stored is not None and not (stored[0] == task_id and placed.get(row) == stored[1]):
            where[item] = (*stored, True)
        else:
            where[item] = (task_id, placed[row], False)
    wanted = {(t, r) for t, r, _ in where.values()}
    found: dict[tuple[int, int], list[PlannedMessage]] = {}
    for task, rows in _group(wanted).items():
        for m in session.execute(
            select(Message.task_id, Message.row, Message.id, Message.channel, Message.step, Message.status, Message.scheduled_at,
                   Message.expires_at, Message.waits_for)
            .where(Message.task_id == task, Message.row.in_(rows)).order_by(Message.step)
        ).all():
            found.setdefault((m.task_id, m.row), []).append(PlannedMessage(
                id=m.id, channel=str(m.channel), step=m.step, status=MessageStatus(m.status).value, scheduled_at=m.scheduled_at,
                expires_at=m.expires_at, waits_for=m.waits_for))
    return [Accepted(item=item, task_id=task, row=row, unique_message_id=unique_ids.get(item + 1), duplicate=duplicate,
                     messages=found.get((task, row), []))
            for item, (task, row, duplicate) in where.items()]


def _group(pairs: set[tuple[int, int]]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for task, row in pairs:
        grouped.setdefault(task, []).append(row)
    return grouped

