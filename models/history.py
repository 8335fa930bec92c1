"""Status changes of messages, always written together with their append-only history.

A status never moves backwards, whoever writes it (a dispatch, a poll, a webhook, a pause, each maybe
in its own process): every change is one UPDATE whose WHERE names the statuses a message may leave for
the new one, so the database decides, not a value read earlier. The history gets one event for each
row that UPDATE … RETURNING reports moved (SQLite ≥ 3.35 and PostgreSQL both return them).

A moved message whose row has a `callback url` also gets its event into the callbacks' outbox, in the
same statement or transaction: a change and its callback are committed together or not at all. (The
events' ids are no cursor a reader could follow instead: PostgreSQL hands them out at insert, so a long
transaction commits ids lower than ones already visible, which a cursor would have passed.)
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, bindparam, cast, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session

from models.db import json_text
from models.status import FINAL_STATUSES, UNSENT_STATUSES, CallbackState, MessageStatus
from models.tables import Callback, Message, StatusEvent, utcnow

# Messages per statement: keys bound one by one (an IN list) keep well under SQLite's 32,766 parameters;
# an event copy names only ids, so it takes more at once.
_CHUNK = 500
_EVENT_CHUNK = 10_000
_COLUMNS = Message.__table__.c
# Whether a message's row has a callback url (its params hold the row's other columns, JSON).
_CALLS_BACK = _COLUMNS.params["callback url"].as_string().is_not(None)
# PostgreSQL: the next status event id, from the sequence behind the table's id column (looked up once a statement).
_EVENT_IDS = func.nextval(select(func.pg_get_serial_sequence(StatusEvent.__tablename__, "id")).scalar_subquery())

_last_stamp = datetime.min.replace(tzinfo=utcnow().tzinfo)
_stamp_lock = threading.Lock()


def unique_stamp() -> datetime:
    """Now, but never equal to the previous stamp of this process: it tags one bulk insert's rows (the API's
    request threads take stamps at once, hence the lock)."""
    global _last_stamp
    with _stamp_lock:
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
            moved += _move(session, condition, target, may_become(target), source, values, in_id_order=True)
    return moved


def _given(session: Session, by: str, differing: list[str], chunk: list[dict[str, Any]]) -> Any:
    """Each message's own values as a table (columns `by` and `differing`), from one JSON array parameter.

    A CASE per column cost SQLite one comparison per message and branch (quadratic in the chunk), and a
    VALUES list costs SQLAlchemy a fresh compilation of every row each time (half of a dispatch's time);
    a JSON array is one bound value in a statement compiled once per set of columns.
    """
    dialect = session.get_bind().dialect
    postgres = dialect.name == "postgresql"
    names = [by, *differing]
    processors = [_COLUMNS[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
    rows = []
    for change in chunk:
        row = []
        for name, processor in zip(names, processors):
            value = change[name]
            if postgres:
                if isinstance(value, datetime):
                    value = value.isoformat()  # cast back to the column's type in the query
            elif processor is not None:
                value = processor(value)  # what SQLite stores (a datetime as its text)
            row.append(value)
        rows.append(row)
    data = bindparam("given", json_text(rows), type_=Text())
    if postgres:
        element = func.jsonb_array_elements(cast(data, JSONB)).table_valued("value").alias("element")
        picked = [cast(element.c.value.op("->>")(index), _COLUMNS[name].type).label(name) for index, name in enumerate(names)]
    else:
        element = func.json_each(data).table_valued("value").alias("element")
        picked = [func.json_extract(element.c.value, f"$[{index}]").label(name) for index, name in enumerate(names)]
    return select(*picked).select_from(element).cte("given")


def _move(
    session: Session, condition: ColumnElement[bool], status: MessageStatus, allowed: list[MessageStatus],
    source: str, values: dict[str, Any], *, in_id_order: bool = False,
) -> int:
    """One conditional UPDATE … RETURNING, and one event for each message it moved (and its callback, for a
    message with a callback url); returns how many. `in_id_order`: on PostgreSQL, lock the rows in id order first."""
    at = utcnow()
    leaving = Message.status.in_([s.value for s in allowed])
    if in_id_order and session.get_bind().dialect.name == "postgresql":
        # The per-message writers (dispatch's answers, polls, webhooks: chunks of 500 joined on ids or provider
        # ids) lock their rows in id order: two of them on the same messages locked them in whatever order
        # their joins ran, and deadlocked. ORDER BY is applied before the lock, so the locks follow it. Not
        # for a change by condition (a whole task scheduled, paused, cancelled): locking a million rows
        # first doubled a schedule's work, and no per-message writer touches the messages it moves.
        locked = select(Message.id).where(condition, leaving).order_by(Message.id).with_for_update(of=Message).correlate(None)
        condition = Message.id.in_(locked.scalar_subquery()) & condition
    moving = (
        update(Message)
        .where(condition, leaving)
        .values(status=status.value, status_updated_at=at, **values)
        .returning(Message.id, Message.task_id, Message.status_description, _CALLS_BACK.label("calls_back"))
    )
    if session.get_bind().dialect.name == "postgresql":
        # One statement: the events are inserted from the rows the UPDATE returns (a data-modifying
        # WITH), where asking by 300,000 returned ids took three times as long as the cancel itself.
        # Each moved row takes its event id first, so its event and its callback are both inserted from
        # those rows: matching the inserted events back to the moved rows was a join of two WITH results,
        # which the planner, knowing neither's size, could run as a nested loop (a 100,000-message cancel
        # was still running after 18 minutes).
        moved = moving.cte("moved")
        numbered = select(_EVENT_IDS.label("event_id"), moved).cte("numbered")
        logging = _events(numbered, status.value, source, at, ids=numbered.c.event_id).cte("logging")
        calling = _callbacks(select(numbered.c.event_id, numbered.c.id).where(numbered.c.calls_back), at).cte("calling")
        return session.execute(select(func.count()).select_from(numbered).add_cte(logging).add_cte(calling)).scalar_one()
    # SQLite has no data-modifying WITH: the events are copied from the rows with the returned ids,
    # still inside the database (no per-row work in Python) and inside the same write transaction.
    returned = session.execute(moving.execution_options(synchronize_session=False)).all()
    if not returned:
        return 0
    # The UPDATE holds SQLite's write lock: every event id above this one is inserted below.
    before = session.execute(select(func.coalesce(func.max(StatusEvent.id), 0))).scalar_one()
    ids = [row.id for row in returned]
    for start in range(0, len(ids), _EVENT_CHUNK):
        chunk = select(Message.id, Message.task_id, Message.status_description).where(Message.id.in_(ids[start : start + _EVENT_CHUNK]))
        _log(session, chunk.subquery(), status.value, source, at)
    calling = [row.id for row in returned if row.calls_back]
    for start in range(0, len(calling), _EVENT_CHUNK):
        logged = select(StatusEvent.id, StatusEvent.message_id).where(
            StatusEvent.id > before, StatusEvent.message_id.in_(calling[start : start + _EVENT_CHUNK])
        )
        session.execute(_callbacks(logged, at))
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


def _events(messages: Any, status: str, source: str, at: datetime, ids: Any = None) -> Any:
    """An event for each row of `messages`; `ids`: their ids, taken already (else the table's own)."""
    picked = select(
        *([ids] if ids is not None else []), messages.c.id, messages.c.task_id, literal(status), messages.c.status_description,
        literal(source), literal(at, type_=StatusEvent.__table__.c.at.type),
    )
    columns = ["message_id", "task_id", "status", "description", "source", "at"]
    return insert(StatusEvent.__table__).from_select((["id"] if ids is not None else []) + columns, picked)


def _callbacks(events: Any, at: datetime) -> Any:
    """Put each event `events` selects (its id, then its message's) into the callbacks' outbox, due now."""
    event_id, message_id = events.subquery().c
    picked = select(
        event_id, message_id, literal(CallbackState.DUE.value), literal(0),
        literal(at, type_=Callback.__table__.c.next_attempt_at.type), literal(""),
    )
    return insert(Callback.__table__).from_select(["event_id", "message_id", "state", "attempts", "next_attempt_at", "last_error"], picked)
