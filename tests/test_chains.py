"""Fallback chains step by step: what intake stores for a row of several channels, and how a chain moves
on as its channels fail, deliver or stay silent, on SQLite and PostgreSQL."""
from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from models.params import HistoryFilter
from models.status import HistoryGroup
from models.tables import Message, utcnow
from tasks.delivery.chains import advance_chains
from tasks.intake.intake import intake
from tasks.reporting.history import export_history
from tasks.schedule.schedule import schedule
from tests.files import phones, write_xlsx
from tests.test_steps import make_task_from

HEADER = ["phone", "email", "text", "channel", "channels", "required", "send order"]


def chain_task(tmp_path: Path, rows: list[list[Any]]) -> int:
    task_id = make_task_from(write_xlsx(tmp_path / f"chain-{uuid.uuid4().hex[:6]}.xlsx", HEADER, rows))
    intake.fn(task_id)
    schedule.fn(task_id)
    return task_id


def chain_of(engine: Any, task_id: int) -> list[tuple[str, str, str | None]]:
    with Session(engine) as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(Message.channel, Message.status, Message.waits_for).where(Message.task_id == task_id).order_by(Message.row, Message.step))]


def set_status(engine: Any, task_id: int, channel: str, status: str, **values: Any) -> None:
    with Session(engine) as session:
        session.execute(update(Message).where(Message.task_id == task_id, Message.channel == channel).values(status=status, **values))
        session.commit()


def test_intake_stores_a_message_per_channel_and_only_the_first_is_scheduled(tmp_path: Path, engine: Any) -> None:
    [phone] = phones(1, start=uuid.uuid4().int % 9_000_000)
    task_id = chain_task(tmp_path, [[phone, "a@example.com", "Ready", None, '["viber", "sms", "email"]', None, None]])

    assert chain_of(engine, task_id) == [("viber", "QUEUED", None), ("sms", "CREATED", "viber"), ("email", "CREATED", "viber sms")]
    with Session(engine) as session:
        recipients = dict(session.execute(select(Message.channel, Message.recipient).where(Message.task_id == task_id)).all())
    assert recipients == {"viber": phone, "sms": phone, "email": "a@example.com"}


def test_each_failure_releases_the_next_channel_and_a_delivery_skips_the_rest(tmp_path: Path, engine: Any) -> None:
    [phone] = phones(1, start=uuid.uuid4().int % 9_000_000)
    task_id = chain_task(tmp_path, [[phone, "a@example.com", "Ready", None, '["viber", "sms", "email"]', None, None]])

    assert advance_chains.fn(task_id).released == 0  # viber is still queued
    set_status(engine, task_id, "viber", "UNDELIVERED")
    assert advance_chains.fn(task_id).released == 1
    assert advance_chains.fn(task_id).released == 0  # a second pass repeats nothing
    schedule.fn(task_id)
    assert chain_of(engine, task_id)[1:] == [("sms", "QUEUED", None), ("email", "CREATED", "viber sms")]

    set_status(engine, task_id, "sms", "DELIVERED")
    assert advance_chains.fn(task_id).skipped == 1
    assert chain_of(engine, task_id) == [("viber", "UNDELIVERED", None), ("sms", "DELIVERED", None), ("email", "SKIPPED", "viber sms")]


def test_an_accepted_channel_without_a_final_status_falls_back_when_its_lifetime_ends(tmp_path: Path, engine: Any) -> None:
    [phone] = phones(1, start=uuid.uuid4().int % 9_000_000)
    task_id = chain_task(tmp_path, [[phone, None, "Code 1234", None, '["viber", "sms"]', None, None]])
    ends = utcnow() + timedelta(minutes=5)
    set_status(engine, task_id, "viber", "PENDING", expires_at=ends)

    waiting = advance_chains.fn(task_id)
    assert (waiting.released, waiting.next_deadline) == (0, ends)  # the run wakes then
    assert advance_chains.fn(task_id, now=ends + timedelta(seconds=1)).released == 1


def test_required_and_parallel_channels_are_never_held(tmp_path: Path, engine: Any) -> None:
    first, second = phones(2, start=uuid.uuid4().int % 9_000_000)
    task_id = chain_task(tmp_path, [
        [first, "a@example.com", "Receipt", "email", '["viber", "sms"]', True, None],
        [second, None, "Sale", None, '["viber", "sms"]', None, "parallel"],
    ])
    assert chain_of(engine, task_id) == [
        ("email", "QUEUED", None), ("viber", "QUEUED", None), ("sms", "CREATED", "viber"),  # email required, viber → sms
        ("viber", "QUEUED", None), ("sms", "QUEUED", None),  # parallel
    ]
    set_status(engine, task_id, "viber", "DELIVERED")
    advance_chains.fn(task_id)
    statuses = [s for _c, s, _w in chain_of(engine, task_id)]
    assert statuses == ["QUEUED", "DELIVERED", "SKIPPED", "DELIVERED", "QUEUED"]  # required email and parallel sms still go


def test_history_groups_find_required_channels_not_sent_and_channels_omitted_for_an_error(tmp_path: Path, engine: Any) -> None:
    first, second = phones(2, start=uuid.uuid4().int % 9_000_000)
    task_id = chain_task(tmp_path, [
        [first, "a@example.com", "Receipt", "email", '["sms"]', True, None],
        [second, None, "Code", None, '["viber", "sms"]', None, None],
    ])
    with Session(engine) as session:
        session.execute(update(Message).where(Message.task_id == task_id, Message.row == 3, Message.channel == "viber").values(status="ERROR"))
        session.commit()
    advance_chains.fn(task_id)

    def count(group: HistoryGroup) -> int:
        return export_history(HistoryFilter(task_id=task_id, group=group)).messages

    assert count(HistoryGroup.CREATED_OPTIONAL) == 1  # the required e-mail, queued
    assert count(HistoryGroup.OMITTED_OPTIONAL) == 1  # viber failed technically, sms used instead
    assert count(HistoryGroup.ALL) == 4
