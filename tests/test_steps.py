"""Each step of the notification-task flow on the database, with the sandbox carrier over HTTP."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select, update
from sqlmodel import Session

from flows.campaign import _next_wait
from models.errors import LeaseHeld
from models.params import NotificationTaskParams
from models.status import Channel, MessageStatus
from models.tables import Message, NotificationTask, StatusEvent
from providers.base import OutgoingMessage
from providers.sandbox.adapter import SandboxCarrier
from tasks.control.lifecycle import open_task
from tasks.delivery.channels import open_channels
from tasks.delivery.dispatch import DispatchResult, dispatch
from tasks.delivery.lease import take_lease
from tasks.delivery.poll import PollResult, poll
from models.settings import get_settings
from providers.registry import UnknownProvider, provider_for
from tasks.intake.intake import intake
from tasks.reporting.counts import status_counts
from tasks.reporting.report import MESSAGE_COLUMNS, build_report
from tasks.schedule.schedule import schedule
from tests.files import EVERY_CHANNEL_HEADER, channel_rows, phones, write_xlsx
from tests.sandbox_fixtures import wait_until

ALL_DAY = ["00:00-24:00"]


def make_task(tmp_path: Path, good: int, bad: int = 0, windows: list[str] = ALL_DAY) -> int:
    rows: list[list[Any]] = [[p, f"message {i}"] for i, p in enumerate(phones(good, start=uuid.uuid4().int % 9_000_000))]
    rows += [["not a phone", "x"]] * bad
    path = write_xlsx(tmp_path / f"task-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text"], rows)
    return make_task_from(path, windows)


def make_task_from(path: Path, windows: list[str] = ALL_DAY) -> int:
    """A notification task for `path`, as a run of the flow would open it."""
    return open_task.fn(NotificationTaskParams(task_file=str(path), windows=windows), str(uuid.uuid4()))


def statuses(engine: Any, task_id: int) -> dict[str, int]:
    with Session(engine) as session:
        return status_counts(session, task_id)


def carrier_refs(sandbox_url: str, task_id: int, engine: Any) -> list[str]:
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    accepted = httpx.get(f"{sandbox_url}/messages", timeout=10).json()
    items = accepted["messages"] if isinstance(accepted, dict) else accepted
    return [m["ref"] for m in items if m["ref"].startswith(f"{uid}-")]


@contextmanager
def carrier_config(sandbox_url: str, **changes: Any) -> Iterator[None]:
    original = httpx.get(f"{sandbox_url}/config").json()
    httpx.put(f"{sandbox_url}/config", json={**original, **changes}).raise_for_status()
    try:
        yield
    finally:
        httpx.put(f"{sandbox_url}/config", json=original).raise_for_status()


def ready_to_send(tmp_path: Path, good: int) -> tuple[int, str]:
    task_id = make_task(tmp_path, good)
    intake.fn(task_id)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    return task_id, owner


def test_intake_stores_accepted_rows_and_rejections_once(tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=20, bad=3)
    first = intake.fn(task_id)
    again = intake.fn(task_id)
    assert (first.accepted, first.rejected) == (20, 3) == (again.accepted, again.rejected)
    assert statuses(engine, task_id) == {"CREATED": 20}
    with Session(engine) as session:
        events = session.scalar(select(func.count()).where(StatusEvent.task_id == task_id, StatusEvent.status == "CREATED"))
    assert events == 20


def test_half_finished_intake_goes_on_without_duplicates(tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=30)
    with Session(engine) as session:
        stored = Path(session.get(NotificationTask, task_id).file)  # type: ignore[union-attr]
    kept = stored.read_bytes()
    intake.fn(task_id)
    stored.write_bytes(kept)  # a process that died mid-intake had not deleted the task's copy yet
    with Session(engine) as session:  # as if the process had died after the first rows were stored
        doomed = session.scalars(select(Message.id).where(Message.task_id == task_id).order_by(Message.id.desc()).limit(10)).all()
        session.execute(Message.__table__.delete().where(Message.id.in_(doomed)))
        session.execute(update(NotificationTask).where(NotificationTask.id == task_id).values(ingested_at=None))
        session.commit()
    assert intake.fn(task_id).accepted == 30
    assert statuses(engine, task_id) == {"CREATED": 30}


def test_message_outside_window_is_delayed_until_the_window_opens(tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=5, windows=["09:00-10:00"])
    intake.fn(task_id)
    now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)  # 12:00 in Moscow: today's window has passed
    result = schedule.fn(task_id, now=now)
    assert (result.queued, result.delayed) == (0, 5)
    with Session(engine) as session:
        message = session.scalars(select(Message).where(Message.task_id == task_id)).first()
    assert message is not None and message.status == MessageStatus.DELAYED
    assert message.scheduled_at == datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    assert message.expires_at == message.scheduled_at + timedelta(minutes=1440)


def test_dispatch_sends_each_message_once(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=40)
    first = dispatch.fn(task_id, owner, Channel.SMS)
    second = dispatch.fn(task_id, owner, Channel.SMS)
    assert (first.sent, first.remaining, second.sent) == (40, 0, 0)
    assert sorted(carrier_refs(stack.sandbox_url, task_id, engine)) == sorted(set(carrier_refs(stack.sandbox_url, task_id, engine)))
    assert len(carrier_refs(stack.sandbox_url, task_id, engine)) == 40
    assert statuses(engine, task_id).get("QUEUED", 0) == 0


def test_message_whose_outcome_was_lost_is_reconciled_not_resent(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=12)
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
        lost = session.execute(select(Message.id, Message.recipient, Message.text).where(Message.task_id == task_id).limit(5)).all()
        # A minute ago a process marked these as handed, the carrier took them, and the process died
        # before recording ids.
        session.execute(update(Message).where(Message.id.in_([m.id for m in lost])).values(
            handed_at=datetime.now(UTC) - timedelta(minutes=1), handed_by="other-host/1/run/dead", attempts=1))
        session.commit()
    with SandboxCarrier(stack.sandbox_url) as carrier:
        carrier.send([OutgoingMessage(ref=f"{uid}-{m.id}", recipient=m.recipient, text=m.text, sender="notiflow", channel=Channel.SMS)
                      for m in lost])
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert result.sent == 12
    refs = carrier_refs(stack.sandbox_url, task_id, engine)
    assert len(refs) == len(set(refs)) == 12
    with Session(engine) as session:
        reconciled = session.scalar(select(func.count()).where(
            Message.task_id == task_id, Message.status_description.like("%reconciled%")))
    assert reconciled == 5


def test_carrier_fault_gives_the_batch_back_for_a_later_attempt(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=8)
    with carrier_config(stack.sandbox_url, fault_500_rate=1.0):
        failed = dispatch.fn(task_id, owner, Channel.SMS)
    assert failed.sent == 0 and failed.carrier_fault and "HTTP 500" in failed.carrier_fault
    assert failed.due_now
    with Session(engine) as session:
        handed = session.scalar(select(func.count()).where(Message.task_id == task_id, Message.handed_at.is_not(None)))
    assert handed == 0
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 8
    assert len(carrier_refs(stack.sandbox_url, task_id, engine)) == 8


def test_dispatch_without_the_lease_refuses_to_send(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, _owner = ready_to_send(tmp_path, good=3)
    with pytest.raises(LeaseHeld):
        dispatch.fn(task_id, "someone-else", Channel.SMS)
    assert carrier_refs(stack.sandbox_url, task_id, engine) == []


def test_message_past_its_validity_period_expires_unsent(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=4)
    with Session(engine) as session:
        session.execute(update(Message).where(Message.task_id == task_id).values(
            expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        session.commit()
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.expired) == (0, 4)
    assert statuses(engine, task_id) == {"EXPIRED": 4}
    assert carrier_refs(stack.sandbox_url, task_id, engine) == []


def test_poll_brings_every_sent_message_to_a_final_status(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_to_send(tmp_path, good=25)
    dispatch.fn(task_id, owner, Channel.SMS)
    wait_until(lambda: poll.fn(task_id, "sandbox").outstanding == 0, timeout=30, interval=0.5, what="every message to be final")
    counts = statuses(engine, task_id)
    assert set(counts) <= {"DELIVERED", "UNDELIVERED"} and sum(counts.values()) == 25
    with Session(engine) as session:
        history = session.scalars(select(StatusEvent.status).where(StatusEvent.task_id == task_id)).all()
    assert history.count("SENT") == 25
    assert history.count("DELIVERED") + history.count("UNDELIVERED") == 25


def ready_on_channels(tmp_path: Path, per_channel: dict[str, int]) -> tuple[int, str]:
    """A task whose file has `per_channel[c]` rows on each channel c, taken in and scheduled, its lease held."""
    start = uuid.uuid4().int % 9_000_000
    rows = [row for channel, count in per_channel.items() for row in channel_rows(channel, count, start=start)]
    task_id = make_task_from(write_xlsx(tmp_path / f"channels-{uuid.uuid4().hex[:6]}.xlsx", EVERY_CHANNEL_HEADER, rows))
    taken = intake.fn(task_id)
    assert (taken.accepted, taken.rejected) == (sum(per_channel.values()), 0)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    return task_id, owner


def carrier_messages(sandbox_url: str, task_id: int, engine: Any) -> dict[str, tuple[str, str]]:
    """What the carrier took for this task: ref → (channel, recipient)."""
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    listed = httpx.get(f"{sandbox_url}/messages", timeout=10).json()["messages"]
    return {m["ref"]: (m["channel"], m["to"]) for m in listed if m["ref"].startswith(f"{uid}-")}


@pytest.mark.parametrize("channel", list(Channel))
def test_every_channel_is_carried_by_the_one_sandbox_instance_by_default(channel: Channel) -> None:
    provider = provider_for(channel)
    assert isinstance(provider, SandboxCarrier) and provider.name == "sandbox" and channel in provider.capabilities.channels
    assert provider_for(Channel.SMS) is provider  # kept open across batches, not rebuilt per call


def test_a_route_to_an_account_that_does_not_exist_says_how_to_create_it(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFLOW_ROUTES", '{"sms": ["kannel-main"]}')
    get_settings.cache_clear()
    try:
        assert provider_for(Channel.EMAIL).name == "sandbox"
        with pytest.raises(UnknownProvider, match=r"no provider account 'kannel-main'.*notiflow provider add kannel-main"):
            provider_for(Channel.SMS)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_open_channels_are_those_with_messages_not_final_yet(tmp_path: Path, engine: Any) -> None:
    task_id, _owner = ready_on_channels(tmp_path, {"email": 2, "sms": 2, "push": 1})
    assert open_channels(task_id) == [Channel.SMS, Channel.EMAIL, Channel.PUSH]
    with Session(engine) as session:
        session.execute(update(Message).where(Message.task_id == task_id, Message.channel == "sms").values(status="DELIVERED"))
        session.commit()
    assert open_channels(task_id) == [Channel.EMAIL, Channel.PUSH]


def test_dispatch_and_poll_of_a_channel_take_only_its_messages_to_its_recipients(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id, owner = ready_on_channels(tmp_path, {"sms": 3, "email": 4, "push": 2})
    with Session(engine) as session:
        stored = {m.id: (m.channel, m.recipient) for m in session.scalars(select(Message).where(Message.task_id == task_id))}

    emails = dispatch.fn(task_id, owner, Channel.EMAIL)

    assert (emails.channel, emails.sent, emails.refused, emails.remaining) == ("email", 4, 0, 0)
    taken = carrier_messages(stack.sandbox_url, task_id, engine)
    assert sorted(taken.values()) == sorted(v for v in stored.values() if v[0] == "email")
    assert statuses(engine, task_id) == {"SENT": 4, "QUEUED": 5}
    wait_until(lambda: poll.fn(task_id, "sandbox").outstanding == 0, timeout=30, interval=0.5, what="every e-mail to be final")
    assert statuses(engine, task_id)["QUEUED"] == 5

    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 3 and dispatch.fn(task_id, owner, Channel.PUSH).sent == 2
    taken = carrier_messages(stack.sandbox_url, task_id, engine)
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    assert taken == {f"{uid}-{message_id}": sent_to for message_id, sent_to in stored.items()}


def test_wait_is_for_the_soonest_thing_any_channel_waits_for() -> None:
    now = datetime.now(UTC)
    done = DispatchResult(channel="sms", sent=0, refused=0, expired=0, remaining=0, next_due_at=None)
    email_window = DispatchResult(channel="email", sent=0, refused=0, expired=0, remaining=4, next_due_at=now + timedelta(hours=1))
    sms_polls = PollResult(updated=0, outstanding=3, next_poll_at=now + timedelta(seconds=30))
    nothing_out = PollResult(updated=0, outstanding=0, next_poll_at=None)

    wake, name, message = _next_wait([done, email_window], [sms_polls, nothing_out], None) or (None, "", "")
    assert (wake, name) == (now + timedelta(seconds=30), "Waiting for status poll")
    assert "(4 to send, 3 awaiting delivery reports)" in message

    wake, name, _ = _next_wait([done, email_window], [nothing_out, nothing_out], None) or (None, "", "")
    assert (wake, name) == (now + timedelta(hours=1), "Waiting for window")
    assert _next_wait([done, done], [nothing_out, nothing_out], None) is None


def test_report_has_the_spec_columns_and_the_rejected_rows(tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=6, bad=2)
    intake.fn(task_id)
    schedule.fn(task_id)
    result = build_report.fn(task_id)
    workbook = load_workbook(result.path, read_only=True)
    assert workbook.sheetnames == ["Messages", "Rejected rows", "Summary"]
    messages = list(workbook["Messages"].iter_rows(values_only=True))
    assert [h.split(" (")[0] for h in messages[0]] == list(MESSAGE_COLUMNS)
    assert len(messages) == 7
    rejected = list(workbook["Rejected rows"].iter_rows(values_only=True))
    assert rejected[0] == ("row", "column", "value", "reason")
    assert [(r[0], r[1]) for r in rejected[1:]] == [(8, "phone"), (9, "phone")]
    assert result.counts == {"QUEUED": 6}
