"""SQLite writers wait for the write lock instead of failing with "database is locked".

One process holds the write lock for a few seconds (as a 300,000-message cancel did for 5.7 s);
another campaign's writes, in another process, wait and succeed once the first commits.
"""
from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
from sqlalchemy import select, text, update

from models.db import session_scope
from models.history import transition
from models.status import MessageStatus
from models.tables import Message, NotificationTask, StatusEvent, utcnow
from providers.base import StatusReport
from tasks.delivery.track import apply_reports
from tests.test_status_race import PROVIDER, make_task

HOLD_SECONDS = 3.0


def _hold_write_lock(task_id: int, locked: Any, release: Any) -> None:
    """Write, then keep the transaction (and SQLite's write lock) open until told to commit."""
    with session_scope() as session:
        transition(session, Message.task_id == task_id, MessageStatus.PAUSED, "held by a long write", "pause")
        locked.set()
        release.wait(60)


def _another_campaign_writes(task_id: int, provider_ids: list[str], writing: Any, results: Any) -> None:
    """The writes of another campaign's steps: a report, a transition, and a read followed by a write."""
    started = time.monotonic()
    writing.set()
    try:
        with session_scope() as session:
            # Read while the lock is held (WAL lets readers on), then write: the write must wait for
            # the lock, not fail because the read saw the database before the other commit.
            task = session.get(NotificationTask, task_id)
            assert task is not None
            session.execute(update(NotificationTask).where(NotificationTask.id == task_id).values(state_description="written after a read"))
        with session_scope() as session:
            apply_reports(session, PROVIDER, [StatusReport(provider_ids[0], MessageStatus.DELIVERED, "delivered", utcnow())], "webhook")
        with session_scope() as session:
            transition(session, Message.provider_message_id == provider_ids[1], MessageStatus.UNDELIVERED, "refused", "poll")
        results.put(("ok", time.monotonic() - started))
    except Exception as exc:  # reported to the test, which shows it
        results.put((f"{type(exc).__name__}: {exc}", time.monotonic() - started))


def test_a_writer_waits_for_another_process_holding_the_write_lock_and_then_succeeds(engine: Any) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL locks rows, not the database")
    held_task, _ = make_task(50, MessageStatus.QUEUED)
    other_task, provider_ids = make_task(2)
    context = multiprocessing.get_context("spawn")
    locked, release, writing, results = context.Event(), context.Event(), context.Event(), context.Queue()
    holder = context.Process(target=_hold_write_lock, args=(held_task, locked, release))
    holder.start()
    try:
        assert locked.wait(60), "the holder took the write lock"
        writer = context.Process(target=_another_campaign_writes, args=(other_task, provider_ids, writing, results))
        writer.start()
        assert writing.wait(60), "the writer started writing"
        time.sleep(HOLD_SECONDS)  # the lock is held this long on purpose: the writer must wait through it
        assert results.empty(), "the writer cannot have written while the lock was held"
        release.set()
        outcome, waited = results.get(timeout=60)
    finally:
        release.set()
        holder.join(30)
    writer.join(30)
    assert outcome == "ok"
    assert waited >= HOLD_SECONDS
    with session_scope() as session:
        statuses = dict(session.execute(select(Message.provider_message_id, Message.status).where(Message.task_id == other_task)).all())
        events = session.scalar(select(text("count(*)")).select_from(StatusEvent).where(StatusEvent.task_id == other_task))
        description = session.scalar(select(NotificationTask.state_description).where(NotificationTask.id == other_task))
        paused = session.scalar(select(text("count(*)")).select_from(Message).where(Message.task_id == held_task, Message.status == "PAUSED"))
    assert statuses == {provider_ids[0]: "DELIVERED", provider_ids[1]: "UNDELIVERED"}
    assert (events, description, paused) == (2, "written after a read", 50)


def test_every_sqlite_connection_waits_on_a_busy_database_and_uses_wal(engine: Any) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30000
