"""Messages in flight (handed to the carrier, no answer recorded) are reconciled by their idempotency key,
never resent blind, never given up while the carrier may have them, and never taken from a call that may
still be running; pause and cancel lock the task before its messages. Sandbox carrier over HTTP."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlmodel import Session

from models.settings import get_settings
from models.status import Channel
from models.tables import Message, NotificationTask
from tasks.control.control import cancel_unsent, hold_unsent
from tasks.delivery.dispatch import dispatch
from tests.sandbox_fixtures import wait_until
from tests.test_steps import carrier_config, carrier_refs, ready_to_send, statuses


def test_a_timeout_after_the_last_attempt_is_reconciled_not_an_error(stack: Any, tmp_path: Any, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=6)
    last = get_settings().max_send_attempts - 1
    with Session(engine) as session:  # every message has used all its attempts but one
        session.execute(update(Message).where(Message.task_id == task_id).values(attempts=last))
        session.commit()
    # The carrier takes the batch 11 s after the request, one second after the client gave up waiting.
    with carrier_config(stack.sandbox_url, accept_seconds=11):
        timed_out = dispatch.fn(task_id, owner, Channel.SMS)
        assert timed_out.carrier_fault and "timed out" in timed_out.carrier_fault
        assert "ERROR" not in statuses(engine, task_id)
        wait_until(lambda: len(carrier_refs(stack.sandbox_url, task_id, engine)) == 6, timeout=15, interval=0.3,
                   what="the carrier to accept the batch the client gave up on")
    reconciled = dispatch.fn(task_id, owner, Channel.SMS)
    assert (reconciled.sent, reconciled.remaining, reconciled.carrier_fault) == (6, 0, None)
    assert statuses(engine, task_id) == {"SENT": 6}
    refs = carrier_refs(stack.sandbox_url, task_id, engine)
    assert len(refs) == len(set(refs)) == 6


def test_a_message_in_another_live_process_call_is_not_sent_again(stack: Any, tmp_path: Any, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=10)
    with Session(engine) as session:  # a process on another host is in its provider call for three of them
        busy = session.scalars(select(Message.id).where(Message.task_id == task_id).order_by(Message.id).limit(3)).all()
        session.execute(update(Message).where(Message.id.in_(busy)).values(
            handed_at=datetime.now(UTC), handed_by="other-host/4242/run/abc", attempts=1))
        session.commit()
    first = dispatch.fn(task_id, owner, Channel.SMS)
    assert (first.sent, first.remaining) == (7, 3) and not first.due_now
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    assert not {f"{uid}-{i}" for i in busy} & set(carrier_refs(stack.sandbox_url, task_id, engine))

    with Session(engine) as session:  # its call is past the hand-over deadline and the carrier never got them
        session.execute(update(Message).where(Message.id.in_(busy)).values(
            handed_at=datetime.now(UTC) - timedelta(seconds=get_settings().handover_deadline_seconds + 1)))
        session.commit()
    second = dispatch.fn(task_id, owner, Channel.SMS)
    assert (second.sent, second.remaining) == (3, 0)
    refs = carrier_refs(stack.sandbox_url, task_id, engine)
    assert len(refs) == len(set(refs)) == 10


def _changes_messages(action: str, task_id: int, owner: str) -> None:
    if action == "pause":
        hold_unsent(task_id)
    elif action == "cancel":
        cancel_unsent(task_id)
    else:
        dispatch.fn(task_id, owner, Channel.SMS)


@pytest.mark.parametrize("action", ["pause", "cancel", "dispatch"])
def test_pause_cancel_and_dispatch_lock_the_task_before_its_messages(
    action: str, stack: Any, tmp_path: Any, engine: Any
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises writers")
    task_id, owner = ready_to_send(tmp_path, good=5)
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT id FROM notification_task WHERE id = :id FOR UPDATE"), {"id": task_id})
        worker = threading.Thread(target=_changes_messages, args=(action, task_id, owner), daemon=True)
        worker.start()
        deadline = datetime.now(UTC) + timedelta(seconds=1.5)
        while datetime.now(UTC) < deadline:  # all the while the task is locked, its messages stay free
            with engine.connect() as probe:
                probe.begin()
                free = probe.execute(text(
                    "SELECT count(*) FROM (SELECT id FROM message WHERE task_id = :id FOR UPDATE SKIP LOCKED) free"
                ), {"id": task_id}).scalar()
                probe.rollback()
            assert free == 5, f"{action} locked {5 - free} messages before the task row"
        holder.rollback()
    worker.join(timeout=30)
    assert not worker.is_alive()
    with Session(engine) as session:
        touched = session.scalar(select(func.count()).where(Message.task_id == task_id, Message.status != "QUEUED"))
    assert touched == 5
