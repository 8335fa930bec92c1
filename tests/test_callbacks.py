"""Status callbacks, as a customer's receiver sees them: every status change of a message whose row has a
`callback url` arrives there once, in order, signed; a failing receiver gets retries in order; two delivery
processes racing send each change once; private addresses are refused unless a setting allows them.

The receiver is a real HTTP server on 127.0.0.1 (allowed with NOTIFLOW_CALLBACK_PRIVATE_NETWORKS, which
conftest sets for the session's `notiflow server` too). The delivery tests keep their messages in a database
of their own: the session's server delivers the callbacks of the session's database every minute, and
must not take these tests' callbacks from them.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select
from sqlmodel import Session

from models.db import get_engine, session_scope
from models.history import transition
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.signing import derived_callback_secret
from models.status import CallbackState, MessageStatus
from models.tables import Callback, Message, NotificationTask, StatusEvent, utcnow
from tasks.control.lifecycle import open_task
from tasks.delivery.callbacks import CallbackTally, deliver_due, signing_key
from tasks.intake.intake import intake
from tests.files import phones, write_xlsx
from tests.sandbox_fixtures import wait_until

KEY = b"test-callback-key"
CHANGES = [
    (MessageStatus.QUEUED, "waiting in queue"), (MessageStatus.SENT, "handed to the operator"),
    (MessageStatus.PENDING, "being delivered"), (MessageStatus.DELIVERED, "delivered"),
]
STATUSES = [status.value for status, _ in CHANGES]


# --- the receiver ------------------------------------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answer: int
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A customer's callback endpoint: records every request, answers each path with its scripted codes, then 200."""

    url: str
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> int:
        with self.lock:
            codes = self.script.get(path)
            return codes.pop(0) if codes else 200

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = self.path.split("?")[0]
            if state.delay:
                time.sleep(state.delay)
            if path == "/redirect":
                code, headers, reply = 302, {"Location": "/elsewhere"}, b""
            elif path == "/chatty":
                code, headers, reply = 200, {}, b"x" * 5_000_000
            elif path == "/slow":
                time.sleep(3)
                code, headers, reply = 200, {}, b""
            else:
                code, headers, reply = state.answer(path), {}, b"ok"
            with state.lock:
                state.received.append(Received(path, dict(self.headers), body, code, time.monotonic()))
            try:
                self.send_response(code)
                for name, value in {"Content-Length": str(len(reply)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def signed_correctly(request: Received, key: bytes = KEY) -> bool:
    """The check the README shows a receiver: HMAC-SHA256 of "<timestamp>." + the raw body."""
    timestamp = request.headers["X-Notiflow-Timestamp"]
    expected = hmac.new(key, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["X-Notiflow-Signature"], f"sha256={expected}") and abs(time.time() - int(timestamp)) < 300


# --- a database of the delivery tests' own ---------------------------------------------------------

@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if os.environ.get("NOTIFLOW_TEST_DATABASE", "sqlite") != "postgresql":
        yield get_engine(f"sqlite:///{tmp_path_factory.mktemp('callbacks') / 'callbacks.db'}")
        return
    server = os.environ.get("NOTIFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    name = f"notiflow_callbacks_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = get_engine(server.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set NOTIFLOW_ settings for one test (fast retries, the receiver's address allowed)."""
    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"NOTIFLOW_{name.upper()}", value)
        get_settings.cache_clear()

    apply(callback_private_networks='["127.0.0.1/32"]', callback_retry_first_seconds="0.05", callback_retry_max_seconds="0.2")
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


def make_messages(db: Engine, urls: list[str | None], data: Callable[[int], Any] = lambda i: {"order": i}) -> list[int]:
    """One task with a message per URL (None: a row without a callback url); returns the message ids."""
    with session_scope(db) as session:
        task = NotificationTask(uid=uuid.uuid4().hex, name="callbacks", file="f.csv", source_file="f.csv")
        session.add(task)
        session.flush()
        rows = [
            {"task_id": task.id, "row": i + 2, "recipient": f"+7916{i:07d}", "channel": "sms", "text": "hi", "sender": "", "encoding": "GSM-7", "fee": 0, "status": "CREATED",
             "status_description": "created, not sent", "external_id": f"crm-{i}", "created_at": utcnow(),
             "params": {"callback url": url, "callback data": data(i)} if url else {"priority": "high"}}
            for i, url in enumerate(urls)
        ]
        session.execute(insert(Message), rows)
        return list(session.scalars(select(Message.id).where(Message.task_id == task.id).order_by(Message.row)))


def change(db: Engine, ids: list[int], status: MessageStatus, description: str) -> None:
    with session_scope(db) as session:
        assert transition(session, Message.id.in_(ids), status, description, "test") == len(ids)


def go_through_every_change(db: Engine, ids: list[int]) -> None:
    for status, description in CHANGES:
        change(db, ids, status, description)


def outbox(db: Engine, ids: list[int]) -> list[Callback]:
    with Session(db) as session:
        return list(session.scalars(select(Callback).where(Callback.message_id.in_(ids)).order_by(Callback.event_id)))


def deliver_all(db: Engine, ids: list[int], timeout: float = 20) -> CallbackTally:
    """Delivery passes until no callback of these messages is due (the way the deliver-callbacks run loops)."""
    tally = CallbackTally()

    def settled() -> bool:
        nonlocal tally
        tally += deliver_due(KEY, db)
        return all(c.state != CallbackState.DUE for c in outbox(db, ids))

    wait_until(settled, timeout=timeout, interval=0.01, what="every callback delivered, given up or refused")
    return tally


def statuses_by_message(requests: list[Received]) -> dict[int, list[str]]:
    seen: dict[int, list[str]] = defaultdict(list)
    for request in requests:
        seen[request.json["message_id"]].append(request.json["status"])
    return seen


# --- the tests ---------------------------------------------------------------------------------------

def test_a_receiver_sees_every_change_once_in_order_with_a_valid_signature(
    db: Engine, receiver: Receiver, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    ids = make_messages(db, [f"{receiver.url}/status?m={i}" for i in range(5)] + [None], data=lambda i: {"order": 1000 + i, "tags": ["a", "ü"]})
    go_through_every_change(db, ids)
    deliver_all(db, ids)

    assert statuses_by_message(receiver.received) == {message_id: STATUSES for message_id in ids[:5]}
    assert all(signed_correctly(r) for r in receiver.received)
    assert not any(signed_correctly(r, key=b"another key") for r in receiver.received)
    with Session(db) as session:
        events = {e.id: e for e in session.scalars(select(StatusEvent).where(StatusEvent.message_id.in_(ids)))}
        messages = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
    for request in receiver.received:
        body, event = request.json, events[request.json["event_id"]]
        message = messages[body["message_id"]]
        assert body == {
            "event_id": event.id, "message_id": message.id, "task_id": message.task_id, "row": message.row,
            "external_id": message.external_id, "channel": "sms", "recipient": message.recipient, "status": event.status,
            "status_description": event.description, "at": body["at"], "callback_data": {"order": 1000 + message.row - 2, "tags": ["a", "ü"]},
        }
        assert datetime.fromisoformat(body["at"]) == event.at
        assert request.headers["Content-Type"] == "application/json"
    assert [c.state for c in outbox(db, ids)] == [CallbackState.DELIVERED] * 20
    assert {(c.attempts, c.response_status) for c in outbox(db, ids)} == {(1, 200)}

    assert deliver_due(KEY, db).claimed == 0  # a change the receiver took is never sent again
    assert len(receiver.received) == 20
    assert KEY.decode() not in caplog.text


def test_a_receiver_failing_twice_gets_retries_in_order_with_growing_waits(db: Engine, receiver: Receiver, settings: Any) -> None:
    ids = make_messages(db, [f"{receiver.url}/flaky", f"{receiver.url}/steady"])
    receiver.script["/flaky"] = [500, 503]
    go_through_every_change(db, ids)
    deliver_all(db, ids)

    flaky = receiver.on("/flaky")
    assert [(r.json["status"], r.answer) for r in flaky] == [("QUEUED", 500), ("QUEUED", 503), ("QUEUED", 200), ("SENT", 200),
                                                           ("PENDING", 200), ("DELIVERED", 200)]
    assert flaky[1].at - flaky[0].at >= 0.05 and flaky[2].at - flaky[1].at >= 0.1  # the first wait, then twice that
    assert all(signed_correctly(r) for r in flaky)
    # The other message's changes did not wait for the failing one.
    assert [r.json["status"] for r in receiver.on("/steady")] == STATUSES
    first = outbox(db, ids[:1])[0]
    assert (first.state, first.attempts, first.response_status, first.last_error) == (CallbackState.DELIVERED, 3, 200, "")


def test_two_delivery_processes_racing_deliver_each_change_once_in_order(db: Engine, receiver: Receiver, settings: Any) -> None:
    settings(callback_batch_size="7", callback_concurrency="3")
    receiver.delay = 0.005
    ids = make_messages(db, [f"{receiver.url}/race/{i}" for i in range(40)])
    writing = threading.Event()
    writing.set()
    delivered: list[int] = [0, 0]
    failures: list[BaseException] = []

    def deliverer(slot: int) -> None:
        try:
            while True:
                still_writing = writing.is_set()
                done = deliver_due(KEY, db)
                delivered[slot] += done.delivered
                if not done.claimed:
                    if not still_writing and all(c.state != CallbackState.DUE for c in outbox(db, ids)):
                        return
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001  (reported by the test thread)
            failures.append(exc)

    threads = [threading.Thread(target=deliverer, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for status, description in CHANGES:  # the changes keep coming while both deliver
        for half in (ids[::2], ids[1::2]):
            change(db, half, status, description)
            time.sleep(0.02)
    writing.clear()
    for thread in threads:
        thread.join(60)
    assert not failures and not any(thread.is_alive() for thread in threads)

    event_ids = [r.json["event_id"] for r in receiver.received]
    assert len(event_ids) == len(set(event_ids)) == 160
    assert statuses_by_message(receiver.received) == {message_id: STATUSES for message_id in ids}
    assert delivered[0] > 0 and delivered[1] > 0 and sum(delivered) == 160


@pytest.mark.parametrize("place", ["loopback", "private", "metadata", "loopback by name"])
def test_without_the_setting_a_private_address_is_refused_and_recorded_not_sent(
    db: Engine, receiver: Receiver, settings: Any, place: str
) -> None:
    settings(callback_private_networks="[]")
    port = receiver.url.rsplit(":", 1)[1]
    url = {"loopback": f"{receiver.url}/cb", "private": "http://10.0.0.1/cb", "metadata": "http://169.254.169.254/latest/meta-data/",
           "loopback by name": f"http://localhost:{port}/cb"}[place]
    ids = make_messages(db, [url])
    go_through_every_change(db, ids)
    deliver_all(db, ids)

    assert receiver.received == []
    for callback in outbox(db, ids):
        assert (callback.state, callback.attempts) == (CallbackState.REFUSED, 0)
        assert "is not a public address" in callback.last_error and "NOTIFLOW_CALLBACK_PRIVATE_NETWORKS" in callback.last_error


def test_the_request_goes_to_the_address_that_was_checked_not_to_a_second_dns_answer(
    db: Engine, receiver: Receiver, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebinding DNS answers the check with the receiver and every later lookup with a private address."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"] + ["10.0.0.1"] * 100)

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real(next(answers) if host == "receiver.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings(callback_timeout_seconds="1")
    port = receiver.url.rsplit(":", 1)[1]
    ids = make_messages(db, [f"http://receiver.test:{port}/named"])
    change(db, ids, MessageStatus.QUEUED, "waiting in queue")
    deliver_all(db, ids)

    assert [(r.headers["Host"], r.json["status"]) for r in receiver.on("/named")] == [(f"receiver.test:{port}", "QUEUED")]
    assert outbox(db, ids)[0].state == CallbackState.DELIVERED


def test_a_change_still_failing_after_24_hours_is_given_up_and_the_next_is_sent(db: Engine, receiver: Receiver, settings: Any) -> None:
    settings(callback_give_up_seconds="0.5")
    ids = make_messages(db, [f"{receiver.url}/down-for-a-day"])
    receiver.script["/down-for-a-day"] = [500] * 1000
    change(db, ids, MessageStatus.QUEUED, "waiting in queue")
    wait_until(lambda: deliver_due(KEY, db).given_up, timeout=10, interval=0.01, what="the change given up")
    receiver.script["/down-for-a-day"] = []  # the receiver is back
    change(db, ids, MessageStatus.SENT, "handed to the operator")
    deliver_all(db, ids)

    requests = receiver.on("/down-for-a-day")
    assert [r.json["status"] for r in requests[:-1]] == ["QUEUED"] * (len(requests) - 1) and len(requests) >= 3
    assert (requests[-1].json["status"], requests[-1].answer) == ("SENT", 200)
    given_up, sent = outbox(db, ids)
    assert (given_up.state, given_up.last_error, given_up.attempts) == (CallbackState.GIVEN_UP, "HTTP 500", len(requests) - 1)
    assert given_up.next_attempt_at is None and given_up.finished_at is not None
    assert sent.state == CallbackState.DELIVERED


def test_a_redirect_is_not_followed_and_a_slow_or_chatty_receiver_is_cut_off(db: Engine, receiver: Receiver, settings: Any) -> None:
    settings(callback_timeout_seconds="0.5", callback_retry_first_seconds="60", callback_retry_max_seconds="600")
    ids = make_messages(db, [f"{receiver.url}/redirect", f"{receiver.url}/slow", f"{receiver.url}/chatty"])
    change(db, ids, MessageStatus.QUEUED, "waiting in queue")
    started = time.monotonic()
    deliver_due(KEY, db)
    assert time.monotonic() - started < 2.5

    redirect, slow, chatty = outbox(db, ids)
    assert (redirect.state, redirect.last_error, redirect.response_status) == (CallbackState.DUE, "HTTP 302", 302)
    assert (slow.state, slow.last_error) == (CallbackState.DUE, "no answer within 0.5 s")
    assert chatty.state == CallbackState.DELIVERED
    assert redirect.next_attempt_at is not None and redirect.next_attempt_at - datetime.now(redirect.next_attempt_at.tzinfo) > timedelta(seconds=50)
    assert "/elsewhere" not in [r.path for r in receiver.received]


def test_the_signing_key_is_the_setting_else_derived_from_the_server_secret(settings: Any) -> None:
    settings(callback_secret="from-the-environment", callback_secret_block="")
    assert signing_key() == b"from-the-environment"
    settings(callback_secret="")
    assert signing_key() == derived_callback_secret().encode() != b""
    assert "from-the-environment" not in repr(get_settings())


def test_a_task_files_callback_url_and_data_are_kept_and_its_changes_enter_the_outbox(engine: Engine, tmp_path: Path) -> None:
    """Through the intake, on the session's database: the columns as a customer writes them."""
    path = tmp_path / f"callbacks-{uuid.uuid4().hex[:6]}.csv"
    path.write_text(
        'phone,text,Callback URL,callback_data\n'
        '+79161230001,hello,https://crm.example.com/notiflow?id=1,"{""order"": 1, ""ok"": true}"\n'
        '+79161230002,hello,,\n',
        encoding="utf-8",
    )
    task_id = open_task.fn(NotificationTaskParams(task_file=str(path), windows=["00:00-24:00"]), str(uuid.uuid4()))
    assert intake.fn(task_id).accepted == 2
    with Session(engine) as session:
        with_url, without = session.scalars(select(Message).where(Message.task_id == task_id).order_by(Message.row)).all()
    assert with_url.params == {"callback url": "https://crm.example.com/notiflow?id=1", "callback data": {"order": 1, "ok": True}}
    assert not (without.params or {}).get("callback url")

    change(engine, [with_url.id, without.id], MessageStatus.QUEUED, "waiting in queue")
    with Session(engine) as session:
        queued = session.scalar(select(StatusEvent.id).where(StatusEvent.message_id == with_url.id, StatusEvent.status == "QUEUED"))
        outboxed = session.execute(select(Callback.event_id, Callback.message_id).where(Callback.message_id.in_([with_url.id, without.id]))).all()
    assert outboxed == [(queued, with_url.id)]  # its creation is no change; the other row has no callback url


@pytest.mark.e2e
def test_a_campaigns_changes_reach_its_receiver_from_the_deliver_callbacks_deployment(
    stack: Any, engine: Engine, receiver: Receiver, tmp_path: Path
) -> None:
    """As a customer sees it: a campaign run with `notiflow run`, its callbacks sent by the deployment `notiflow server`
    serves (a run started here, beside the scheduled ones: each change still arrives once)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.callbacks import DELIVER_CALLBACKS

    rows = [[phone, f"Hello {i}", f"{receiver.url}/campaign?row={i}", json.dumps({"order": i})]
            for i, phone in enumerate(phones(4, start=uuid.uuid4().int % 9_000_000))]
    path = write_xlsx(tmp_path / "callbacks.xlsx", ["phone", "text", "callback url", "callback data"], rows)
    result = subprocess.run([sys.executable, "-m", "notiflow.cli", "run", str(path), "--json", "--window", "00:00-24:00"],
                            capture_output=True, text=True, timeout=240, env=os.environ.copy())
    assert result.returncode == 0, result.stderr + result.stdout
    task_id = json.loads(result.stdout)["task_id"]
    with Session(engine) as session:
        changes = session.execute(
            select(StatusEvent.message_id, StatusEvent.status).where(StatusEvent.task_id == task_id, StatusEvent.status != "CREATED")
            .order_by(StatusEvent.id)
        ).all()
    expected: dict[int, list[str]] = defaultdict(list)
    for message_id, status in changes:
        expected[message_id].append(status)
    assert len(expected) == 4 and all(statuses[-1] in ("DELIVERED", "UNDELIVERED") for statuses in expected.values())

    run = run_deployment(DELIVER_CALLBACKS, parameters={"seconds": 15}, timeout=0)
    wait_until(lambda: len(receiver.on("/campaign")) >= len(changes), timeout=90, interval=0.2, what="every change at the receiver")
    with get_client(sync_client=True) as client:
        final = wait_until(lambda: (s := client.read_flow_run(run.id).state) is not None and s.is_final() and s, timeout=90, interval=0.5)
    assert final.is_completed(), final.message

    received = receiver.on("/campaign")
    assert len({r.json["event_id"] for r in received}) == len(received) == len(changes)
    assert statuses_by_message(received) == expected
    key = signing_key()  # no Secret block and no setting: the key derived from the server's secret, as the server's runs use
    assert all(signed_correctly(r, key) for r in received)
    assert {r.json["callback_data"]["order"] for r in received} == {0, 1, 2, 3}


@pytest.mark.e2e
def test_the_signing_key_comes_from_a_prefect_secret_block_when_one_is_named(stack: Any, settings: Any) -> None:
    from prefect.blocks.system import Secret

    name = f"callback-key-{uuid.uuid4().hex[:8]}"
    Secret(value="kept-in-prefect").save(name)
    try:
        settings(callback_secret="", callback_secret_block=name)
        assert signing_key() == b"kept-in-prefect"
        settings(callback_secret="the-environment-wins")
        assert signing_key() == b"the-environment-wins"
    finally:
        Secret.delete(name)
