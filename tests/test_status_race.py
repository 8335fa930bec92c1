"""Statuses never move backwards, whoever writes them: a poll and a webhook racing in two processes.

A poll that read PENDING and a webhook that read DELIVERED write the same messages at the same time,
round after round, from two real OS processes. Whatever the interleaving, each message ends DELIVERED
with its delivery time, and its history holds exactly one event per move that happened.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from models.db import in_transaction, session_scope
from models.history import record_each, transition
from models.status import MessageStatus
from models.tables import Message, NotificationTask, StatusEvent, utcnow
from providers.base import StatusReport
from tasks.delivery.track import apply_reports

PROVIDER = "race-carrier"
ROUNDS = 25
PER_ROUND = 120
CHUNK = 10  # reports per call: many interleaving points per round
DELIVERED_AT = datetime(2026, 1, 2, 3, 4, 5, 678000).astimezone()


def make_task(messages: int, status: MessageStatus = MessageStatus.SENT, prefix: str = "") -> tuple[int, list[str]]:
    """A task with `messages` messages already in `status`, each with a provider id; returns the ids."""
    uid = uuid.uuid4().hex
    with session_scope() as session:
        task = NotificationTask(uid=uid, name="race", file="race.xlsx", source_file="race.xlsx")
        session.add(task)
        session.flush()
        assert task.id is not None
        provider_ids = [f"{prefix or uid}-{i}" for i in range(messages)]
        session.execute(insert(Message), [
            {
                "task_id": task.id, "row": i + 2, "recipient": f"+7916{i:07d}", "channel": "sms", "text": "hi",
                "sender": "", "encoding": "GSM-7", "fee": 0, "status": status.value, "status_description": "", "provider": PROVIDER,
                "provider_message_id": provider_id if status.rank >= MessageStatus.SENT.rank else None,
                "sent_at": utcnow(), "created_at": utcnow(),
            }
            for i, provider_id in enumerate(provider_ids)
        ])
    return task.id, provider_ids


def _report_in_chunks(status: str, description: str, jobs: Any, results: Any, barrier: Any) -> None:
    """One carrier report source (a poll or a webhook) in its own process: each round's reports, in chunks."""
    moved = 0
    while True:
        provider_ids = jobs.get()
        if provider_ids is None:
            break
        barrier.wait()
        for start in range(0, len(provider_ids), CHUNK):
            reports = [
                StatusReport(provider_message_id=p, status=MessageStatus(status), description=description, at=DELIVERED_AT)
                for p in provider_ids[start : start + CHUNK]
            ]
            with session_scope() as session:
                moved += apply_reports(session, PROVIDER, reports, description)
        barrier.wait()
    results.put(moved)


def events_by_message(task_ids: list[int]) -> dict[int, list[str]]:
    events: dict[int, list[str]] = defaultdict(list)
    with session_scope() as session:
        for message_id, status in session.execute(
            select(StatusEvent.message_id, StatusEvent.status).where(StatusEvent.task_id.in_(task_ids)).order_by(StatusEvent.id)
        ):
            events[message_id].append(status)
    return events


def test_poll_and_webhook_racing_in_two_processes_end_delivered_with_one_event_per_move(engine: Any) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    poll_jobs, webhook_jobs, results = context.Queue(), context.Queue(), context.Queue()
    processes = [
        context.Process(target=_report_in_chunks, args=(MessageStatus.PENDING.value, "poll", poll_jobs, results, barrier)),
        context.Process(target=_report_in_chunks, args=(MessageStatus.DELIVERED.value, "webhook", webhook_jobs, results, barrier)),
    ]
    task_ids = []
    for _ in range(ROUNDS):
        task_id, provider_ids = make_task(PER_ROUND)
        task_ids.append(task_id)
        poll_jobs.put(provider_ids)
        webhook_jobs.put(list(reversed(provider_ids)))
    for process in processes:
        process.start()
    try:
        poll_jobs.put(None)
        webhook_jobs.put(None)
        moved = results.get(timeout=300) + results.get(timeout=300)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)

    with session_scope() as session:
        final = session.execute(
            select(Message.id, Message.status, Message.delivered_at, Message.next_poll_at).where(Message.task_id.in_(task_ids))
        ).all()
    assert len(final) == ROUNDS * PER_ROUND
    assert {row.status for row in final} == {MessageStatus.DELIVERED.value}
    assert {row.delivered_at for row in final} == {DELIVERED_AT}
    events = events_by_message(task_ids)
    assert sum(len(e) for e in events.values()) == moved, "an event for every move the writers made, and no other"
    assert {tuple(e) for e in events.values()} <= {("DELIVERED",), ("PENDING", "DELIVERED")}
    assert set(events) == {row.id for row in final}


def test_a_late_poll_does_not_take_a_delivered_message_back(engine: Any) -> None:
    task_id, (provider_id,) = make_task(1)
    at = utcnow()
    with session_scope() as session:
        assert apply_reports(session, PROVIDER, [StatusReport(provider_id, MessageStatus.DELIVERED, "delivered", at)], "webhook") == 1
    with session_scope() as session:
        assert apply_reports(session, PROVIDER, [StatusReport(provider_id, MessageStatus.PENDING, "pending", at)], "poll") == 0
        assert apply_reports(session, PROVIDER, [StatusReport(provider_id, MessageStatus.DELIVERED, "again", at)], "poll") == 0
    with session_scope() as session:
        status, delivered_at = session.execute(select(Message.status, Message.delivered_at).where(Message.task_id == task_id)).one()
    assert (status, delivered_at) == (MessageStatus.DELIVERED.value, at)
    assert list(events_by_message([task_id]).values()) == [["DELIVERED"]]


def test_an_acceptance_recorded_after_a_final_status_leaves_it_final(engine: Any) -> None:
    """Dispatch's SENT write (record_each) and a condition's transition never replace a final status."""
    task_id, _ = make_task(3, MessageStatus.QUEUED)
    with session_scope() as session:
        ids = list(session.scalars(select(Message.id).where(Message.task_id == task_id).order_by(Message.id)))
        transition(session, Message.id == ids[0], MessageStatus.UNDELIVERED, "refused by the network", "webhook")
    with session_scope() as session:
        moved = record_each(session, [
            {"id": i, "status": MessageStatus.SENT.value, "status_description": "accepted", "provider_message_id": f"late-{i}"}
            for i in ids
        ], "dispatch")
        assert moved == 2
        assert transition(session, Message.task_id == task_id, MessageStatus.QUEUED, "back in queue", "schedule") == 0
    with session_scope() as session:
        rows = dict(session.execute(select(Message.id, Message.status).where(Message.task_id == task_id)).all())
    assert rows == {ids[0]: "UNDELIVERED", ids[1]: "SENT", ids[2]: "SENT"}
    assert events_by_message([task_id]) == {ids[0]: ["UNDELIVERED"], ids[1]: ["SENT"], ids[2]: ["SENT"]}


def test_each_change_keeps_its_own_values_in_one_bulk_write(engine: Any) -> None:
    task_id, _ = make_task(4, MessageStatus.QUEUED)
    later = utcnow() + timedelta(minutes=5)
    with session_scope() as session:
        ids = list(session.scalars(select(Message.id).where(Message.task_id == task_id).order_by(Message.id)))
        record_each(session, [
            {"id": ids[0], "status": "SENT", "status_description": "accepted", "provider_message_id": "a", "next_poll_at": later},
            {"id": ids[1], "status": "SENT", "status_description": "accepted (reconciled)", "provider_message_id": "b", "next_poll_at": later},
            {"id": ids[2], "status": "ERROR", "status_description": "refused: bad number", "provider": "x"},
            {"id": ids[3], "status": "ERROR", "status_description": "refused: blocked", "provider": "x"},
        ], "dispatch")
    with session_scope() as session:
        rows = session.execute(
            select(Message.id, Message.status, Message.status_description, Message.provider_message_id, Message.next_poll_at)
            .where(Message.task_id == task_id).order_by(Message.id)
        ).all()
        events = session.execute(
            select(StatusEvent.message_id, StatusEvent.status, StatusEvent.description, StatusEvent.source)
            .where(StatusEvent.task_id == task_id).order_by(StatusEvent.message_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        (ids[0], "SENT", "accepted", "a", later), (ids[1], "SENT", "accepted (reconciled)", "b", later),
        (ids[2], "ERROR", "refused: bad number", None, None), (ids[3], "ERROR", "refused: blocked", None, None),
    ]
    assert [tuple(e) for e in events] == [
        (ids[0], "SENT", "accepted", "dispatch"), (ids[1], "SENT", "accepted (reconciled)", "dispatch"),
        (ids[2], "ERROR", "refused: bad number", "dispatch"), (ids[3], "ERROR", "refused: blocked", "dispatch"),
    ]


def test_a_transaction_postgresql_ends_to_break_a_deadlock_runs_again_and_commits_once(engine: Any) -> None:
    """in_transaction: the writer PostgreSQL picks as a deadlock's victim is rolled back whole and run again."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no deadlock to break")
    task_id, _ = make_task(2, MessageStatus.SENT)
    with session_scope() as session:
        first, second = session.scalars(select(Message.id).where(Message.task_id == task_id).order_by(Message.id)).all()
    holds_second, first_taken = threading.Event(), threading.Event()

    def other_writer() -> None:  # locks the second message, then wants the first: the opposite order
        with session_scope() as session:
            session.execute(select(Message.id).where(Message.id == second).with_for_update())
            holds_second.set()
            first_taken.wait(10)
            time.sleep(0.3)  # the other writer is waiting for the second by now: its wait is the older, it is the victim
            session.execute(select(Message.id).where(Message.id == first).with_for_update())

    attempts: list[int] = []

    def work(session: Any) -> int:
        attempts.append(1)
        session.execute(select(Message.id).where(Message.id == first).with_for_update())
        first_taken.set()
        return transition(session, Message.id.in_([first, second]), MessageStatus.DELIVERED, "delivered", "webhook")

    other = threading.Thread(target=other_writer)
    other.start()
    assert holds_second.wait(10)
    moved = in_transaction(work)
    other.join(10)
    assert moved == 2 and len(attempts) == 2  # the first attempt was the victim, the second committed
    assert events_by_message([task_id]) == {first: ["DELIVERED"], second: ["DELIVERED"]}
