"""Status changes of messages, always written together with their append-only history.

A status never moves backwards, whoever writes it (a dispatch, a poll, a webhook, a pause, each maybe
in its own process): every change is one UPDATE whose WHERE names the statuses a message may leave for
the new one, so the database decides, not a value read earlier. The history gets one event for each
row that UPDATE … RETURNING reports moved (SQLite ≥ 3.35 and PostgreSQL both return them).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, bindparam, cast, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session

from models.db import json_text
from models.status import FINAL_STATUSES, UNSENT_STATUSES, MessageStatus
from models.tables import Message, StatusEvent, utcnow

# Messages per statement: a CASE per changed column keeps well under SQLite's 32,766 parameters;
# an event copy names only ids, so it takes more at once.
_CHUNK = 500
_EVENT_CHUNK = 10_000
_COLUMNS = Message.__table__.c

_last_stamp = datetime.min.replace(tzinfo=utcnow().tzinfo)


def unique_stamp() -> datetime:
    """Now, but never equal to the previous stamp of this process: it tags one bulk insert's rows."""
    global _last_stamp
    now = utcnow()
    if now <= _last_stamp:
        now = _last_stamp + timedelta(microseconds=1)
    _last_stamp = now
    return now


def may_become(status: MessageStatus) -> list[MessageStatus]:
    """The statuses a message may leave for `status`.

    Forward only (QUEUED → SENT → PENDING → final) and a final status is never replaced; among the
    statuses of a message not yet handed to a provider (queued, delayed, paused) it moves freely,
    as scheduling, pause and resume need.
    """
    return [
        current for current in MessageStatus
        if current not in FINAL_STATUSES
        and (current.rank < status.rank or (current.rank == status.rank and {current, status} <= UNSENT_STATUSES))
    ]


def transition(
    session: Session,
    condition: ColumnElement[bool],
    status: MessageStatus,
    description: str,
    source: str,
    *,
    from_statuses: Iterable[MessageStatus] | None = None,
    **values: Any,
) -> int:
    """Move every message matching `condition` to `status` and log one event each; returns how many.

    Only messages in `from_statuses` move (default: those that may become `status`, see may_become).
    """
    allowed = may_become(status) if from_statuses is None else list(from_statuses)
    return _move(session, condition, status, allowed, source, {"status_description": description, **values})


def record_each(
    session: Session,
    changes: list[dict[str, Any]],
    source: str,
    *,
    by: str = "id",
    within: ColumnElement[bool] | None = None,
) -> int:
    """Apply per-message changes (each a dict with `status`, `status_description`, ... and the message's
    `by` column: its `id`, or its `provider_message_id` with `within` naming the provider) and log one
    event for each message that moved; returns how many moved.

    Bulk: one UPDATE per target status, set of changed columns and 500 messages; values that differ
    between messages come from one JSON parameter read as a table and joined on `by` (UPDATE … FROM,
    SQLite ≥ 3.33 and PostgreSQL; see _given). A change that would take a message backwards (see
    may_become) leaves it as it is, with no event.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for change in changes:
        columns = tuple(sorted(key for key in change if key not in (by, "status")))
        groups.setdefault((change["status"], columns), []).append(change)
    key = _COLUMNS[by]
    moved = 0
    for (status, columns), group in groups.items():
        for start in range(0, len(group), _CHUNK):
            chunk = group[start : start + _CHUNK]
            keys = [change[by] for change in chunk]
            shared = {column: chunk[0][column] for column in columns if all(change[column] == chunk[0][column] for change in chunk)}
            differing = [column for column in columns if column not in shared]
            if differing:
                given = _given(session, by, differing, chunk)
                condition = key == given.c[by]
                values = {**shared, **{name: given.c[name] for name in differing}}
            else:
                condition = key.in_(keys)
                values = shared
            if within is not None:
                condition = condition & within
            target = MessageStatus(status)
            moved += _move(session, condition, target, may_become(target), source, values)
    return moved


def _given(session: Session, by: str, differing: list[str], chunk: list[dict[str, Any]]) -> Any:
    """Each message's own values as a table (columns `by` and `differing`), from one JSON array parameter.

    A CASE per column cost SQLite one comparison per message and branch (quadratic in the chunk), and a
    VALUES list costs SQLAlchemy a fresh compilation of every row each time (half of a dispatch's time);
    a JSON array is one bound value in a statement compiled once per set of columns.
    """
    dialect = session.get_bind().dialect
    names = [by, *differing]
    processors = [_COLUMNS[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
    rows = []
    for change in chunk:
        row = []
        for name, processor in zip(names, processors):
            value = change[name]
            if dialect.name == "postgresql" and isinstance(value, datetime):
                value = value.isoformat()  # cast back to the column's type in the query
            elif processor is not None and dialect.name != "postgresql":
                value = processor(value)  # what SQLite stores (a datetime as its text)
            row.append(value)
        rows.append(row)
    data = bindparam("given", json_text(rows), type_=Text())
    if dialect.name == "postgresql":
        element = func.jsonb_array_elements(cast(data, JSONB)).table_valued("value").alias("element")
        picked = [cast(element.c.value.op("->>")(index), _COLUMNS[name].type).label(name) for index, name in enumerate(names)]
    else:
        element = func.json_each(data).table_valued("value").alias("element")
        picked = [func.json_extract(element.c.value, f"$[{index}]").label(name) for index, name in enumerate(names)]
    return select(*picked).select_from(element).cte("given")


def _move(
    session: Session, condition: ColumnElement[bool], status: MessageStatus, allowed: list[MessageStatus],
    source: str, values: dict[str, Any],
) -> int:
    """One conditional UPDATE … RETURNING, and one event for each message it moved; returns how many."""
    at = utcnow()
    moving = (
        update(Message)
        .where(condition, Message.status.in_([s.value for s in allowed]))
        .values(status=status.value, status_updated_at=at, **values)
        .returning(Message.id, Message.task_id, Message.status_description)
    )
    if session.get_bind().dialect.name == "postgresql":
        # One statement: the events are inserted from the rows the UPDATE returns (a data-modifying
        # WITH), where asking by 300,000 returned ids took three times as long as the cancel itself.
        moved = moving.cte("moved")
        logging = _events(moved, status.value, source, at).cte("logging")
        return session.execute(select(func.count()).select_from(moved).add_cte(logging)).scalar_one()
    # SQLite has no data-modifying WITH: the events are copied from the rows with the returned ids,
    # still inside the database (no per-row work in Python) and inside the same write transaction.
    ids = [row.id for row in session.execute(moving.execution_options(synchronize_session=False))]
    for start in range(0, len(ids), _EVENT_CHUNK):
        chunk = select(Message.id, Message.task_id, Message.status_description).where(Message.id.in_(ids[start : start + _EVENT_CHUNK]))
        _log(session, chunk.subquery(), status.value, source, at)
    return len(ids)


def log_changes_at(session: Session, at: datetime, source: str) -> None:
    """Append a CREATED event for every message just inserted with `status_updated_at` = `at`."""
    # The status too: a change elsewhere that happened to get the same stamp is not an insert.
    just_inserted = select(Message.id, Message.task_id, Message.status_description).where(
        Message.status_updated_at == at, Message.status == MessageStatus.CREATED.value
    )
    _log(session, just_inserted.subquery(), MessageStatus.CREATED.value, source, at)


def _log(session: Session, messages: Any, status: str, source: str, at: datetime) -> None:
    """Append an event for each row of `messages` (columns id, task_id, status_description)."""
    session.execute(_events(messages, status, source, at))


def _events(messages: Any, status: str, source: str, at: datetime) -> Any:
    picked = select(
        messages.c.id, messages.c.task_id, literal(status), messages.c.status_description, literal(source),
        literal(at, type_=StatusEvent.__table__.c.at.type),
    )
    return insert(StatusEvent.__table__).from_select(["message_id", "task_id", "status", "description", "source", "at"], picked)
