"""Dispatch, concurrent and paced: several requests in flight per provider, high priority first, a 429
that holds only its provider and spends no attempt, counted at the sandbox carrier over HTTP."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import Session

from models.settings import get_settings
from models.status import Channel
from models.tables import Message
from providers.registry import close_providers
from tasks.delivery.dispatch import dispatch
from tasks.delivery.lease import take_lease
from tasks.delivery.pacing import throttled_until
from tasks.intake.intake import intake
from tasks.schedule.schedule import schedule
from tests.files import phones, write_xlsx
from tests.test_steps import carrier_config, carrier_refs, make_task_from, ready_to_send


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Requests of 10 messages, so a few dozen messages make several requests."""
    monkeypatch.setenv("NOTIFLOW_DISPATCH_BATCH_SIZE", "10")
    get_settings.cache_clear()
    yield 10
    monkeypatch.undo()
    get_settings.cache_clear()
    close_providers()


def test_one_dispatch_has_its_requests_in_flight_together(stack: Any, tmp_path: Path, engine: Any, small_batches: int) -> None:
    task_id, owner = ready_to_send(tmp_path, good=40)
    with carrier_config(stack.sandbox_url, accept_seconds=1.0):
        started = time.monotonic()
        result = dispatch.fn(task_id, owner, Channel.SMS)
        elapsed = time.monotonic() - started

    assert (result.sent, result.remaining) == (40, 0)  # four requests of ten in one call
    assert elapsed < 3.0, f"four 1-second requests took {elapsed:.1f} s: they went one after the other"
    assert len(carrier_refs(stack.sandbox_url, task_id, engine)) == 40


def test_high_priority_messages_go_first(stack: Any, tmp_path: Path, engine: Any, small_batches: int) -> None:
    rows = [[p, f"m{i}", ["low", "normal", "high"][i % 3]] for i, p in enumerate(phones(60, start=uuid.uuid4().int % 9_000_000))]
    task_id = make_task_from(write_xlsx(tmp_path / f"prio-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text", "priority"], rows))
    intake.fn(task_id)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)

    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 60  # six requests of ten, four in flight at a time

    with Session(engine) as session:
        handed = session.execute(select(Message.priority, Message.handed_at).where(Message.task_id == task_id)).all()
    claimed = {p: (min(at for q, at in handed if q == p), max(at for q, at in handed if q == p)) for p in (0, 1, 2)}
    # Every high message was claimed before any normal one, and every normal one before any low one.
    assert claimed[0][1] < claimed[1][0] and claimed[1][1] < claimed[2][0]


def test_a_dispatch_hands_back_to_the_flow_when_its_span_ends(
    stack: Any, tmp_path: Path, engine: Any, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFLOW_DISPATCH_SPAN_SECONDS", "0.5")
    get_settings.cache_clear()
    task_id, owner = ready_to_send(tmp_path, good=100)
    with carrier_config(stack.sandbox_url, accept_seconds=0.4):
        first = dispatch.fn(task_id, owner, Channel.SMS)
        # Claims stop at the span's end; what was in flight then is recorded before it returns.
        assert 0 < first.sent < 100 and first.sent % 10 == 0 and first.due_now
        assert first.sent + first.remaining == 100 and first.requests == first.sent // 10
        rest = dispatch.fn(task_id, owner, Channel.SMS)
        while rest.due_now:
            rest = dispatch.fn(task_id, owner, Channel.SMS)
    with Session(engine) as session:
        sent = session.scalars(select(Message.provider_message_id).where(Message.task_id == task_id)).all()
    assert None not in sent and len(set(sent)) == 100
    refs = carrier_refs(stack.sandbox_url, task_id, engine)
    assert len(refs) == len(set(refs)) == 100


def test_a_429_holds_only_its_provider_for_retry_after_and_spends_no_attempt(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=5)
    with carrier_config(stack.sandbox_url, fault_429_rate=1.0):
        throttled = dispatch.fn(task_id, owner, Channel.SMS)
        requests = httpx.get(f"{stack.sandbox_url}/stats").json()["send_requests"]
        again = dispatch.fn(task_id, owner, Channel.SMS)  # within Retry-After: not even asked
        assert httpx.get(f"{stack.sandbox_url}/stats").json()["send_requests"] == requests

    assert throttled.retry_after == 1.0 and throttled.sent == 0 and not throttled.due_now
    assert again.sent == 0 and again.next_due_at is not None and again.next_due_at == throttled_until("sandbox")
    with Session(engine) as session:
        attempts = session.execute(select(Message.attempts, Message.handed_at, Message.status).where(Message.task_id == task_id)).all()
    assert {tuple(a) for a in attempts} == {(0, None, "QUEUED")}  # given back whole, no attempt spent

    time.sleep(1.1)
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 5
