"""SMS through a real Kannel (bearerbox, smsbox, the fake SMSC): sent as billed, reports applied once and forward only.

The dispatch step runs in this process with NOTIFLOW_ROUTES pointing sms at a Kannel provider account
(a Prefect block in the session's server); Kannel calls the dlr-url on the session's real API
(`notiflow server`), which applies each report.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from sqlmodel import Session

from models.db import session_scope
from models.settings import get_settings
from models.signing import webhook_secret
from models.status import Channel, MessageStatus
from models.tables import Message, NotificationTask, StatusEvent, utcnow
from providers.base import OutgoingMessage, ProviderRejected
from providers.kannel import KannelGateway
from providers.registry import ProviderAccount
from tasks.compose.segment import count
from tasks.delivery.dispatch import dispatch
from tasks.delivery.poll import poll
from tests.files import phones, write_xlsx
from tests.kannel_fixtures import RunningKannel, kannel  # noqa: F401  (a fixture)
from tests.sandbox_fixtures import wait_until
from tests.test_steps import make_task_from

# Cyrillic: UCS-2, three parts of at most 67 units.
CYRILLIC = ("Здравствуйте! Ваш заказ №1234 собран и передан в службу доставки. Курьер позвонит за час до приезда, "
            "а оплатить можно картой или наличными. Спасибо, что выбрали нас!")


def save_account(kannel: RunningKannel, **changes: Any) -> str:
    """A Kannel provider account block in the session's Prefect server; returns its (instance) name."""
    name = f"kannel-{uuid.uuid4().hex[:8]}"
    fields: dict[str, Any] = {
        "kind": "kannel", "url": kannel.url, "username": kannel.username, "password": kannel.password,
        "sender": "notiflow", "options": {"max_parts": kannel.max_parts},
    }
    ProviderAccount(**{**fields, **changes}).save(name, overwrite=True)
    return name


def task_of(tmp_path: Path, rows: list[list[Any]]) -> tuple[int, str]:
    """A task of `rows` (phone, text), taken in, scheduled and leased: ready to dispatch."""
    from tasks.delivery.lease import take_lease
    from tasks.intake.intake import intake
    from tasks.schedule.schedule import schedule

    task_id = make_task_from(write_xlsx(tmp_path / f"kannel-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text"], rows))
    intake.fn(task_id)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    return task_id, owner


def messages_of(engine: Any, task_id: int) -> list[Message]:
    with Session(engine) as session:
        return list(session.scalars(select(Message).where(Message.task_id == task_id).order_by(Message.id)))


def events_of(engine: Any, message_id: int) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(StatusEvent.status).where(StatusEvent.message_id == message_id).order_by(StatusEvent.id)))


def test_a_three_part_cyrillic_sms_goes_through_kannel_as_billed_and_is_delivered_once(
    stack: Any, kannel: RunningKannel, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    assert count(CYRILLIC)[::2] == ("UCS-2", 3)
    phone = phones(1, start=uuid.uuid4().int % 9_000_000)[0]
    route_sms(save_account(kannel))
    task_id, owner = task_of(tmp_path, [[phone, CYRILLIC]])
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused, result.carrier_fault) == (1, 0, None)
    (message,) = messages_of(engine, task_id)
    assert (message.encoding, message.parts, message.fee) == ("UCS-2", 3, 3 * get_settings().prices["sms"])
    # Kannel sent exactly the three parts we bill, as UCS-2 (coding=2): the text arrives whole, not as '?'.
    parts = wait_until(lambda: (found := kannel.parts_to(phone)) and len(found) >= 3 and found, what="three parts at the SMSC")
    assert len(parts) == 3 and [p.udh[-2:] for p in parts] == [b"\x03\x01", b"\x03\x02", b"\x03\x03"]
    assert "".join(p.ucs2 for p in parts) == CYRILLIC
    # Its reports (an SMSC ack and a delivery, in either order) reach the API through the dlr-url.
    wait_until(lambda: messages_of(engine, task_id)[0].status == MessageStatus.DELIVERED, timeout=20, what="DELIVERED")
    (message,) = messages_of(engine, task_id)
    assert message.provider_message_id == message_ref(engine, message) and message.delivered_at is not None
    history = events_of(engine, message.id)  # type: ignore[arg-type]
    assert history.count("DELIVERED") == 1 and history[-1] == "DELIVERED" and history.count("SENT") == 1


def message_ref(engine: Any, message: Message) -> str:
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == message.task_id))
    return f"{uid}-{message.id}"


def test_kannel_splits_a_text_into_exactly_the_parts_we_bill(kannel: RunningKannel) -> None:
    """Escapes (2 septets), a surrogate pair across a part's end, and the longest texts of 1 and 2 parts."""
    texts = ["a" * 160, "{" * 80, "{" * 81, "a" * 152 + "€" + "a" * 10, "я" * 70, "я" * 134, "я" * 135,
             "😀" * 35, "я" * 66 + "😀" + "я" * 10, "ä" * 161]
    gateway = KannelGateway("kannel-parts", kannel.url, username=kannel.username, password=kannel.password,
                            dlr_url="http://127.0.0.1:9/none?secret=x", dlr_mask=0, max_parts=kannel.max_parts)
    start = uuid.uuid4().int % 9_000_000
    numbers = phones(len(texts), start=start)
    with gateway:
        accepted = gateway.send([
            OutgoingMessage(ref=f"parts-{i}", recipient=to, text=text, sender="notiflow", channel=Channel.SMS,
                            encoding=count(text)[0], parts=count(text)[2])
            for i, (to, text) in enumerate(zip(numbers, texts))
        ])
    assert all(a.provider_message_id for a in accepted) and len(accepted) == len(texts)
    for to, text in zip(numbers, texts):
        billed = count(text)[2]
        wait_until(lambda: len(kannel.parts_to(to)) >= billed, what=f"{billed} parts of {text[:12]!r}")
        assert len(kannel.parts_to(to)) == billed, text


def test_a_message_of_more_parts_than_the_account_sends_is_refused_not_cut(kannel: RunningKannel) -> None:
    gateway = KannelGateway("kannel-cap", kannel.url, username=kannel.username, password=kannel.password,
                            dlr_url="http://127.0.0.1:9/none?secret=x", dlr_mask=0, max_parts=2)
    to = phones(1, start=uuid.uuid4().int % 9_000_000)[0]
    with gateway:
        (answer,) = gateway.send([OutgoingMessage(ref="cap-1", recipient=to, text="я" * 135, sender="n", channel=Channel.SMS,
                                                  encoding="UCS-2", parts=3)])
    assert answer.provider_message_id is None and "3 SMS parts, more than the 2" in (answer.error or "")
    assert kannel.parts_to(to) == []


def test_a_wrong_password_refuses_the_batch_with_kannels_reason_and_no_secret(
    stack: Any, kannel: RunningKannel, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    route_sms(save_account(kannel, password=wrong))
    task_id, owner = task_of(tmp_path, [[p, "hello"] for p in phones(3, start=uuid.uuid4().int % 9_000_000)])
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused) == (0, 3)
    for message in messages_of(engine, task_id):
        assert message.status == MessageStatus.ERROR
        assert "Authorization failed for sendsms" in message.status_description
        assert wrong not in message.status_description and kannel.password not in message.status_description


def test_a_login_refusal_is_raised_for_the_whole_batch(kannel: RunningKannel) -> None:
    gateway = KannelGateway("kannel-login", kannel.url, username=kannel.username, password="nope",
                            dlr_url="http://127.0.0.1:9/none?secret=x", max_parts=10)
    batch = [OutgoingMessage(ref=f"login-{i}", recipient=p, text="hi", sender="n", channel=Channel.SMS)
             for i, p in enumerate(phones(40, start=uuid.uuid4().int % 9_000_000))]
    with gateway, pytest.raises(ProviderRejected, match="username and password") as refused:
        gateway.send(batch)
    assert "nope" not in str(refused.value)
    assert gateway.requests < len(batch)  # it stopped asking once the login was refused


def test_kannel_down_is_a_carrier_fault_to_try_again(tmp_path: Path) -> None:
    from providers.base import ProviderUnavailable

    with socket_that_refuses() as url:
        gateway = KannelGateway("kannel-down", url, username="u", password="secret-pw", dlr_url="http://127.0.0.1:9/x?secret=x")
        with gateway, pytest.raises(ProviderUnavailable) as fault:
            gateway.send([OutgoingMessage(ref="down-1", recipient="+79160000000", text="hi", sender="n", channel=Channel.SMS)])
    assert not fault.value.outcome_unknown and "secret-pw" not in str(fault.value)


class socket_that_refuses:
    """A local address nothing listens on (bound, then closed)."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        return None


# --- the DLR route: GET /dlr/{instance} -------------------------------------------------------------

def sent_messages(instance: str, count_: int) -> tuple[int, list[str]]:
    """A task with `count_` messages SENT through `instance`, each with our reference as the provider id."""
    uid = uuid.uuid4().hex
    with session_scope() as session:
        task = NotificationTask(uid=uid, name="kannel dlr", file="dlr.xlsx", source_file="dlr.xlsx")
        session.add(task)
        session.flush()
        assert task.id is not None
        refs = [f"{uid}-{i}" for i in range(count_)]
        session.execute(insert(Message), [
            {"task_id": task.id, "row": i + 2, "recipient": f"+7916{i:07d}", "channel": "sms", "text": "hi", "sender": "",
             "encoding": "GSM-7", "fee": Decimal("0"), "status": MessageStatus.SENT.value, "status_description": "",
             "provider": instance, "provider_message_id": ref, "sent_at": utcnow(), "created_at": utcnow(),
             "next_poll_at": utcnow()}
            for i, ref in enumerate(refs)
        ])
    return task.id, refs


def dlr(instance: str, ref: str, kind: int, secret: str | None = None, reply: str = "") -> str:
    secret = webhook_secret(instance) if secret is None else secret
    return f"/dlr/{instance}?secret={secret}&ref={ref}&type={kind}&reply={reply}&smsc=abc&at=1796221225"


def test_a_delivery_report_and_a_stale_ack_racing_end_delivered_with_one_event_each(
    stack: Any, kannel: RunningKannel, engine: Any
) -> None:
    """Kannel's reports of one message come in any order and at once (we saw a `1` before its `8`), while the
    poll step runs: through the real API, from two threads, each message ends DELIVERED, recorded once."""
    instance = save_account(kannel)
    task_id, refs = sent_messages(instance, 60)
    failures: list[str] = []

    def report(kinds: tuple[int, ...]) -> None:
        with httpx.Client(base_url=stack.api_url, timeout=30) as client:
            for ref in refs:
                for kind in kinds:
                    answer = client.get(dlr(instance, ref, kind))
                    if answer.status_code != 200:
                        failures.append(f"{kind} {ref}: {answer.status_code} {answer.text}")

    threads = [threading.Thread(target=report, args=(kinds,)) for kinds in ((1,), (8, 4, 8))]
    for thread in threads:
        thread.start()
    poll.fn(task_id, instance)  # a push-only provider is not asked; its poll only plans, and must not undo anything
    for thread in threads:
        thread.join()
    assert failures == []
    with Session(engine) as session:
        statuses = session.execute(select(Message.status, func.count()).where(Message.task_id == task_id).group_by(Message.status)).all()
        events = session.execute(
            select(StatusEvent.message_id, StatusEvent.status).where(StatusEvent.task_id == task_id).order_by(StatusEvent.id)
        ).all()
    assert dict(statuses) == {"DELIVERED": 60}
    by_message: dict[int, list[str]] = {}
    for message_id, status in events:
        by_message.setdefault(message_id, []).append(status)
    for history in by_message.values():
        # PENDING may come before DELIVERED (the buffered report won), never after; DELIVERED exactly once.
        assert history in (["DELIVERED"], ["PENDING", "DELIVERED"]), history
    assert len(by_message) == 60


@pytest.fixture
def stranger() -> Iterator[TestClient]:
    from api.app import app

    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def test_the_dlr_route_refuses_a_missing_or_wrong_secret_and_an_unknown_reference_changes_nothing(
    stack: Any, kannel: RunningKannel, stranger: TestClient, engine: Any
) -> None:
    instance = save_account(kannel)
    task_id, (ref,) = sent_messages(instance, 1)
    before = events_count(engine, task_id)
    assert stranger.get(f"/dlr/{instance}?ref={ref}&type=1").status_code == 401
    assert stranger.get(dlr(instance, ref, 1, secret="guess")).status_code == 401
    assert stranger.get(dlr(instance, ref, 1, secret=webhook_secret("sandbox"))).status_code == 401
    unknown = stranger.get(dlr(instance, f"{ref}-nope", 1))
    assert unknown.status_code == 404  # not known (yet): Kannel asks again later
    assert stranger.get(dlr(instance, ref, 99)).json() == {"received": 0, "applied": 0}  # a type we do not know
    assert stranger.get(f"/dlr/{instance}?secret={webhook_secret(instance)}&type=1").status_code == 422
    assert events_count(engine, task_id) == before
    assert messages_of(engine, task_id)[0].status == MessageStatus.SENT
    failed = stranger.get(dlr(instance, ref, 2, reply="id:1 sub:001 dlvrd:000 stat:UNDELIV err:001 text:hi"))
    assert failed.json() == {"received": 1, "applied": 1}
    (message,) = messages_of(engine, task_id)
    assert (message.status, message.status_description) == (MessageStatus.UNDELIVERED, "not delivered: stat:UNDELIV err:001")
    assert stranger.get(dlr(instance, ref, 1)).json() == {"received": 1, "applied": 0}  # final stays final


def events_count(engine: Any, task_id: int) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).where(StatusEvent.task_id == task_id)) or 0)


def test_a_report_that_overtakes_the_record_of_its_send_is_applied_when_kannel_asks_again(
    stack: Any, kannel: RunningKannel, engine: Any
) -> None:
    """Kannel may call the dlr-url before the dispatcher has written down the 202 (a batch is recorded once it
    is over): the API answers 404, and smsbox (http-request-retry) asks again until the message is known."""
    from providers.base import Acceptance
    from tasks.delivery.reconcile import record_acceptances

    instance = save_account(kannel)
    gateway = KannelGateway.from_account(instance, ProviderAccount.load(instance), get_settings())
    task_id, (ref,) = sent_messages(instance, 1)
    with session_scope() as session:  # as dispatch leaves it while the provider call runs: handed, no answer yet
        message_id = session.scalar(select(Message.id).where(Message.task_id == task_id))
        session.execute(Message.__table__.update().where(Message.id == message_id).values(
            status=MessageStatus.QUEUED.value, provider_message_id=None, handed_at=utcnow(), handed_by="slow-dispatcher"))
    with gateway:
        (accepted,) = gateway.send([OutgoingMessage(ref=ref, recipient="+79160000001", text="hi", sender="n", channel=Channel.SMS)])
    wait_until(lambda: kannel.parts_to("+79160000001"), what="the SMSC to get it")
    time.sleep(0.5)  # the slow bookkeeping under test: Kannel's reports come (and are turned away) first
    assert messages_of(engine, task_id)[0].status == MessageStatus.QUEUED
    record_acceptances([accepted], {ref: message_id}, gateway)
    wait_until(lambda: messages_of(engine, task_id)[0].status == MessageStatus.DELIVERED, timeout=15, what="Kannel's retry")
    assert events_of(engine, message_id).count("DELIVERED") == 1
