"""SMS through SMPP 3.4: the smpp provider against an SMSC simulator (smpp34), driven by the flow's steps
(dispatch.fn, poll.fn) with NOTIFLOW_ROUTES={"sms": ["smsc"]} and a provider account saved in the session's
Prefect server; counted at the simulator."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlmodel import Session

from models.settings import get_settings
from models.status import Channel, MessageStatus
from models.tables import Message, ProviderPart, StatusEvent
from providers.base import OutgoingMessage, ProviderUnavailable
from providers.registry import ProviderAccount, close_providers, provider_named
from providers.sms_parts import user_data
from providers.smpp import SmppProvider, receipt_report
from tasks.compose.segment import count, segment
from tasks.delivery.dispatch import DispatchResult, dispatch
from tasks.delivery.lease import take_lease
from tasks.delivery.poll import poll
from tasks.intake.intake import intake
from tasks.schedule.schedule import schedule
from tests.files import phones, write_xlsx
from tests.sandbox_fixtures import wait_until
from tests.smsc_simulator import UNDELIVERED, SmscSimulator
from tests.test_steps import make_task_from

INSTANCE = "smsc"
# 3 UCS-2 parts: 150 UTF-16 units, more than 2 × 67.
CYRILLIC = ("Здравствуйте! Ваш заказ №4815 собран и передан в службу доставки. Курьер позвонит за час до приезда. "
            "Спасибо, что выбрали наш магазин, ждём вас снова!")


@pytest.fixture(scope="module")
def smsc() -> Iterator[SmscSimulator]:
    simulator = SmscSimulator().start()
    yield simulator
    simulator.stop()


@pytest.fixture
def route(stack: Any, smsc: SmscSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmscSimulator]:
    """SMS routed to the instance "smsc": an SMPP account at the simulator, saved in the session's Prefect server."""
    ProviderAccount(
        kind="smpp", url=smsc.url, username="notiflow", password=SecretStr("s3cret"), sender="Notiflow",
        options={"window": 10, "throttle_pause_seconds": 0.1, "response_seconds": 5},
    ).save(INSTANCE, overwrite=True)
    smsc.reset()
    monkeypatch.setenv("NOTIFLOW_ROUTES", f'{{"sms": ["{INSTANCE}"]}}')
    get_settings.cache_clear()
    yield smsc
    close_providers()
    monkeypatch.undo()
    get_settings.cache_clear()


def ready(tmp_path: Path, rows: list[list[Any]]) -> tuple[int, str]:
    """A task of (phone, text) rows, taken in, scheduled now, and leased to this test."""
    task_id = make_task_from(write_xlsx(tmp_path / f"smpp-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text"], rows))
    intake.fn(task_id)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    return task_id, owner


def numbers(count: int) -> list[str]:
    return phones(count, start=uuid.uuid4().int % 9_000_000)


def messages(engine: Any, task_id: int) -> dict[str, Message]:
    with Session(engine) as session:
        return {m.recipient: m for m in session.scalars(select(Message).where(Message.task_id == task_id))}


def all_final(engine: Any, task_id: int) -> dict[str, Message] | None:
    found = messages(engine, task_id)
    return found if all(MessageStatus(m.status).is_final for m in found.values()) else None


def test_long_cyrillic_sms_goes_as_three_ucs2_parts_and_is_delivered_once(route: SmscSimulator, tmp_path: Path,
                                                                           engine: Any) -> None:
    phone, other = numbers(2)
    task_id, owner = ready(tmp_path, [[phone, CYRILLIC], [other, "Short one"]])
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused, result.carrier_fault) == (2, 0, None)
    final = wait_until(lambda: all_final(engine, task_id), timeout=10, what="both messages final")
    message = final[phone]
    assert (message.status, message.encoding, message.parts) == (MessageStatus.DELIVERED, "UCS-2", 3)
    assert message.fee == get_settings().prices["sms"] * 3
    parts = sorted((s for s in route.taken() if s.destination == phone.lstrip("+")), key=lambda s: s.udh or (0, 0, 0))
    assert len(parts) == 3
    assert {(s.data_coding, s.esm_class & 0x40, s.registered_delivery) for s in parts} == {(8, 0x40, 1)}
    assert [s.udh[1:] for s in parts if s.udh] == [(3, 1), (3, 2), (3, 3)]
    assert len({s.udh[0] for s in parts if s.udh}) == 1
    assert "".join(s.text for s in parts) == CYRILLIC
    assert message.provider_message_id == parts[0].message_id
    with Session(engine) as session:
        events = session.scalars(select(StatusEvent.status).where(StatusEvent.message_id == message.id)).all()
        part_rows = session.execute(select(ProviderPart.part, ProviderPart.provider_message_id, ProviderPart.status)
                                    .where(ProviderPart.message_id == message.id).order_by(ProviderPart.part)).all()
    assert events.count("DELIVERED") == 1
    assert [tuple(row) for row in part_rows] == [(s.udh[2], s.message_id, "DELIVERED") for s in parts if s.udh]
    short = final[other]
    assert (short.status, short.parts) == (MessageStatus.DELIVERED, 1)
    assert [s.data_coding for s in route.taken() if s.destination == other.lstrip("+")] == [0]
    assert route.system_ids == ["notiflow"]


def test_refused_destination_errors_that_message_only_with_the_smscs_reason(route: SmscSimulator, tmp_path: Path,
                                                                            engine: Any) -> None:
    good, bad, also_good = numbers(3)
    route.behaviour.refuse = {bad.lstrip("+"): 0x0B}
    task_id, owner = ready(tmp_path, [[good, "one"], [bad, "two"], [also_good, "three"]])
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused, result.carrier_fault) == (2, 1, None)
    final = wait_until(lambda: all_final(engine, task_id), timeout=10, what="every message final")
    assert final[bad].status == MessageStatus.ERROR
    assert "ESME_RINVDSTADR 0x0000000B (Invalid Destination Address)" in final[bad].status_description
    assert final[bad].status_description.startswith(f"refused by {INSTANCE}: ")
    assert final[good].status == final[also_good].status == MessageStatus.DELIVERED


def test_link_dropped_between_batches_is_bound_again_and_nothing_is_sent_twice(
    route: SmscSimulator, tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFLOW_DISPATCH_BATCH_SIZE", "4")
    monkeypatch.setenv("NOTIFLOW_DISPATCH_SPAN_SECONDS", "0.001")  # one request a dispatch
    get_settings.cache_clear()
    recipients = numbers(8)
    task_id, owner = ready(tmp_path, [[phone, f"batch message {i}"] for i, phone in enumerate(recipients)])
    first = dispatch.fn(task_id, owner, Channel.SMS)
    assert (first.sent, first.remaining) == (4, 4)
    provider = provider_named(INSTANCE)
    assert provider.flush_receipts(timeout=5)  # type: ignore[attr-defined]
    route.drop_links()
    # The reader binds again by itself, often before a test could see the link down: count the binds.
    wait_until(lambda: provider.link.binds == 2, timeout=5, what="the link to be bound again")  # type: ignore[attr-defined]
    second = dispatch.fn(task_id, owner, Channel.SMS)
    assert (second.sent, second.remaining, second.carrier_fault) == (4, 0, None)
    final = wait_until(lambda: all_final(engine, task_id), timeout=10, what="every message final")
    assert {m.status for m in final.values()} == {MessageStatus.DELIVERED}
    assert route.resent() == []
    assert sorted(s.destination for s in route.taken()) == sorted(p.lstrip("+") for p in recipients)
    assert route.system_ids == ["notiflow", "notiflow"]  # bound, then bound again


def test_receipt_arriving_before_its_submit_sm_resp_is_not_lost(route: SmscSimulator, tmp_path: Path, engine: Any) -> None:
    route.behaviour.receipt_first = True
    recipients = numbers(6)
    task_id, owner = ready(tmp_path, [[phone, CYRILLIC if i == 0 else f"quick {i}"] for i, phone in enumerate(recipients)])
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 6
    final = wait_until(lambda: all_final(engine, task_id), timeout=10, what="every message final")
    assert {m.status for m in final.values()} == {MessageStatus.DELIVERED}
    assert route.receipts_sent == 8  # 5 single messages and 3 parts, each receipt sent before its answer


def test_several_submits_are_outstanding_at_once_within_the_window(route: SmscSimulator, tmp_path: Path,
                                                                   engine: Any) -> None:
    route.behaviour.answer_delay = 0.05
    task_id, owner = ready(tmp_path, [[phone, f"windowed {i}"] for i, phone in enumerate(numbers(30))])
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 30
    # Waiting for each answer would keep one outstanding; the window (10) lets several go before the first answer.
    assert 5 <= route.max_outstanding <= 10
    assert provider_named(INSTANCE).window == 10


def test_throttled_smsc_gives_the_batch_back_for_a_later_attempt(route: SmscSimulator, tmp_path: Path, engine: Any) -> None:
    route.behaviour.refuse_all = 0x58
    task_id, owner = ready(tmp_path, [[phone, f"throttled {i}"] for i, phone in enumerate(numbers(3))])
    throttled: DispatchResult = dispatch.fn(task_id, owner, Channel.SMS)
    assert throttled.sent == 0 and throttled.carrier_fault and "ESME_RTHROTTLED" in throttled.carrier_fault
    # The SMSC is held for its 0.1 s, spending no attempt; then the same messages go.
    assert throttled.retry_after == 0.1 and not throttled.due_now and throttled.next_due_at is not None
    assert {(m.status, m.handed_at, m.attempts) for m in messages(engine, task_id).values()} == {(MessageStatus.QUEUED, None, 0)}
    route.behaviour.refuse_all = None
    time.sleep(0.2)
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 3
    assert route.resent() == []


def test_message_fails_as_soon_as_one_part_fails(route: SmscSimulator, tmp_path: Path, engine: Any) -> None:
    phone = numbers(1)[0]
    route.behaviour.outcomes = {phone.lstrip("+"): UNDELIVERED}
    route.behaviour.report_parts = "first"  # the other parts never report: the failure alone decides
    task_id, owner = ready(tmp_path, [[phone, CYRILLIC]])
    dispatch.fn(task_id, owner, Channel.SMS)
    final = wait_until(lambda: all_final(engine, task_id), timeout=10, what="the message final")
    assert final[phone].status == MessageStatus.UNDELIVERED
    assert final[phone].status_description == "part 1 of 3: undeliverable (err:001)"


def test_message_whose_smsc_reports_one_part_takes_that_parts_status_after_the_grace(
    route: SmscSimulator, tmp_path: Path, engine: Any
) -> None:
    route.behaviour.report_parts = "first"
    phone = numbers(1)[0]
    task_id, owner = ready(tmp_path, [[phone, CYRILLIC]])
    dispatch.fn(task_id, owner, Channel.SMS)
    pending = wait_until(lambda: messages(engine, task_id)[phone].status == MessageStatus.PENDING, timeout=10,
                         what="the first part's receipt")
    assert pending
    message = messages(engine, task_id)[phone]
    assert message.status_description == "1 of 3 parts delivered"
    poll.fn(task_id, INSTANCE)  # within the grace: the other parts may still report
    assert messages(engine, task_id)[phone].status == MessageStatus.PENDING
    with Session(engine) as session:  # a minute and more passes with no other part's receipt
        session.execute(update(ProviderPart).where(ProviderPart.message_id == message.id)
                        .values(updated_at=datetime.now(UTC) - timedelta(minutes=2)))
        session.execute(update(Message).where(Message.id == message.id).values(next_poll_at=datetime.now(UTC)))
        session.commit()
    poll.fn(task_id, INSTANCE)
    resolved = messages(engine, task_id)[phone]
    assert resolved.status == MessageStatus.DELIVERED
    assert resolved.status_description.startswith("delivered: 1 of 3 parts reported delivered")
    assert resolved.next_poll_at is None


# -- the bind on its own, without the database --------------------------------------------------------

@pytest.fixture
def bind(smsc: SmscSimulator) -> Iterator[SmppProvider]:
    smsc.reset()
    provider = SmppProvider("smsc-alone", "127.0.0.1", smsc.port, "alone", "pw", enquire_link_seconds=0.2,
                            response_seconds=0.5, throttle_pause_seconds=0.05)
    provider.open()
    yield provider
    provider.close()
    smsc.freeze_links(False)


def sms(ref: str, text: str = "hello") -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=f"+7916{uuid.uuid4().int % 10_000_000:07d}", text=text, sender="Notiflow",
                           channel=Channel.SMS)


def test_silent_link_is_found_dead_by_enquire_link_and_bound_again(smsc: SmscSimulator, bind: SmppProvider) -> None:
    time.sleep(0.6)  # idle past enquire_link_seconds: the keepalive is answered and the bind stays
    assert bind.link.bound and smsc.system_ids == ["alone"]
    smsc.freeze_links()
    wait_until(lambda: not bind.link.bound, timeout=5, what="the unanswered enquire_link to drop the link")
    smsc.freeze_links(False)
    wait_until(lambda: bind.link.bound, timeout=10, what="the link to be bound again")
    assert smsc.system_ids == ["alone", "alone"]
    assert bind.send([sms("after")])[0].provider_message_id


def test_link_dropped_with_submits_outstanding_leaves_their_outcome_unknown(smsc: SmscSimulator, bind: SmppProvider) -> None:
    smsc.behaviour.answer_delay = 0.3
    threading.Timer(0.1, smsc.drop_links).start()
    with pytest.raises(ProviderUnavailable) as fault:
        bind.send([sms(f"m{i}") for i in range(3)])
    assert fault.value.outcome_unknown and fault.value.answered == []


# -- the parts and receipts on their own ---------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("abc {}€[~]^|\\" + "жщЯ" + "😀" + "@£$"), min_size=0, max_size=700))
def test_text_is_cut_into_exactly_the_parts_it_was_counted_as(text: str) -> None:
    encoding, _units, parts = count(text)
    data = user_data(text, encoding, parts, reference=7)
    assert len(data.parts) == parts == segment(text).part_count
    payloads = [p[6:] for p in data.parts] if parts > 1 else list(data.parts)
    if encoding == "UCS-2":
        assert [p.decode("utf-16-be") for p in payloads] == list(segment(text).parts)
    assert all(len(p) <= 140 if encoding == "UCS-2" else len(p) <= 160 for p in data.parts)


def test_text_that_does_not_make_its_billed_parts_is_not_sent() -> None:
    with pytest.raises(ValueError, match="makes 3 UCS-2 parts, not the 2 it was counted and billed as"):
        user_data(CYRILLIC, "UCS-2", 2, reference=1)
    with pytest.raises(ValueError, match="not in the GSM 7-bit alphabet"):
        user_data("Привет", "GSM-7", 1, reference=1)


class _Receipt:
    """A deliver_sm as smpplib parses it, for the receipt reader alone."""

    def __init__(self, text: bytes, receipted_message_id: bytes | None = None, message_state: int | None = None):
        self.short_message, self.receipted_message_id, self.message_state = text, receipted_message_id, message_state


def test_receipt_is_read_from_its_text_when_it_has_no_tlvs() -> None:
    report = receipt_report(_Receipt(b"id:0A1B2C sub:001 dlvrd:000 submit date:2612021200 done date:2612021201 "
                                     b"stat:UNDELIV err:034 text:hello"))
    assert report is not None
    assert (report.provider_message_id, report.status, report.description) == (
        "0A1B2C", MessageStatus.UNDELIVERED, "undeliverable (err:034)")


def test_receipt_tlvs_win_over_its_text() -> None:
    report = receipt_report(_Receipt(b"id:123 stat:ENROUTE err:000", b"abc", 2))
    assert report is not None and (report.provider_message_id, report.status) == ("abc", MessageStatus.DELIVERED)


def test_smpp_account_with_a_password_smpp_cannot_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 8 characters"):
        SmppProvider("smsc", "127.0.0.1", 2775, "notiflow", "far-too-long-password")
