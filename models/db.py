"""Database engine, schema migrations and sessions: SQLite file by default, PostgreSQL by URL."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from models.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several processes (served flow runs, the API's webhook, the CLI) share one file: WAL lets
    # readers go on during a write, and the busy timeout makes writers queue instead of failing.
    # The wait applies because sqlite3's (default, legacy) transaction control begins a transaction
    # at its first write, which takes the write lock through the busy handler; reads before it run
    # on their own. A transaction begun at a read (BEGIN DEFERRED at session start, or sqlite3's
    # autocommit=False) would fail at once with "database is locked" when it writes after another
    # process committed (tests/test_sqlite_busy.py shows it), so keep it so, or begin IMMEDIATE.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def json_text(value: Any) -> str:
    """A JSON column's value as stored: orjson writes it in a sixth of json.dumps' time (the intake writes two
    per message), without spaces and with non-ASCII text kept."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses integers past 64 bits, which JSON (a client's variables, callback data) may hold.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the settings'), migrated to the newest schema."""
    url = url or get_settings().resolved_database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=json_text)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, json_serializer=json_text)
    migrate(engine)
    return engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    config = alembic_config(engine)
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        command.upgrade(config, "head")


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def in_transaction(work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """`work` in a transaction of its own, run again from the start when PostgreSQL ended it to break a
    deadlock or a serialization conflict (it rolled everything back, so nothing is applied twice).

    Writers lock message rows in id order (models/history.py), but one transaction of several bulk
    changes (reports of two statuses) still takes them group by group; such a conflict is rare and
    retried here rather than failing a poll, a webhook or a dispatch."""
    for attempt in range(1, attempts + 1):
        try:
            with session_scope() as session:
                return work(session)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _RETRIED_SQLSTATES or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


# deadlock_detected and serialization_failure: the transaction was rolled back and may simply run again.
_RETRIED_SQLSTATES = ("40P01", "40001")


def insert_new(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Bulk-insert rows, skipping those a unique constraint says are stored already (re-runs)."""
    if not rows:
        return
    table = model.__table__
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(table).on_conflict_do_nothing(), rows)
