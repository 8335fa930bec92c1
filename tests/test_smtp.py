"""The SMTP e-mail adapter against a real SMTP server (aiosmtpd on 127.0.0.1), as a campaign uses it.

Servers run for the module: a plain one (what a campaign's e-mail looks like, the connection kept,
refusals), one that drops idle connections, one that requires STARTTLS and a login, and one that speaks
TLS from the first byte, the last two with a self-signed certificate made here. Campaign steps run in
this process (dispatch.fn), with the provider account a block in the session's Prefect server, as
`notiflow provider add` saves it.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import select
from sqlmodel import Session

from api.app import app
from models.settings import get_settings
from models.status import Channel, MessageStatus
from models.tables import Message, NotificationTask, StatusEvent
from providers.base import OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.registry import ProviderAccount, close_providers, provider_for
from providers.smtp import SmtpProvider
from tasks.delivery.dispatch import dispatch
from tasks.delivery.lease import take_lease
from tasks.intake.intake import intake
from tasks.reporting.report import MESSAGE_COLUMNS, build_report
from tasks.schedule.schedule import schedule
from tests.files import write_xlsx
from tests.sandbox_fixtures import wait_until
from tests.test_steps import make_task_from

SENDER = "news@shop.example"
LOGIN, PASSWORD = "mailer", "correct horse battery staple"
WRONG_PASSWORD = "Tr0ub4dor&3-not-it"
REFUSED = "nobody@shop.example"  # the server refuses this mailbox for good (550)
BUSY = "busy@shop.example"  # and this one for now (450)
TEXT = "Hello,\nyour order <1001> is ready & waiting."


@dataclass(frozen=True)
class Received:
    peer: tuple[str, int]  # the client's address and port: one per connection
    tls: bool
    authenticated: bool
    mail_from: str
    rcpt_tos: list[str]
    email: EmailMessage


class Inbox:
    """An aiosmtpd handler: takes every e-mail but to REFUSED and BUSY, and counts the connections that closed."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.closed = 0

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, options: list[str]) -> str:
        if address == REFUSED:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if address == BUSY:
            return f"450 4.2.1 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        # As a mailbox stores it: the wire's CRLF line ends read as plain line breaks.
        email = message_from_bytes(envelope.content.replace(b"\r\n", b"\n"), policy=policy.default)  # type: ignore[union-attr]
        assert isinstance(email, EmailMessage) and session.peer is not None and envelope.mail_from is not None
        self.received.append(Received(
            peer=tuple(session.peer), tls=session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,  # type: ignore[union-attr]
            authenticated=bool(session.authenticated), mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), email=email,
        ))
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]


class _CountingSMTP(SMTP):
    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.event_handler.closed += 1


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


@dataclass(frozen=True)
class Server:
    port: int
    inbox: Inbox


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _authenticate(server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    # handled=False: aiosmtpd answers a failure itself (535); handled=True would leave the client waiting.
    return AuthResult(success=isinstance(data, LoginPassword) and (data.login, data.password) == (LOGIN.encode(), PASSWORD.encode()),
                      handled=False)


def _serve(**smtp_options: Any) -> Iterator[Server]:
    inbox = Inbox()
    port = _free_port()
    controller = _Controller(inbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    try:
        yield Server(port, inbox)
    finally:
        controller.stop()


def _server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, the server's and the CA a client must be told to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notiflow test SMTP server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    found = Certificate(folder / "server.pem", folder / "server.key")
    found.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return found


@pytest.fixture(scope="module")
def plain_server() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture(scope="module")
def idle_dropping_server() -> Iterator[Server]:
    """A server that says 421 and hangs up on a connection idle for half a second."""
    yield from _serve(timeout=0.5)


@pytest.fixture(scope="module")
def starttls_server(certificate: Certificate) -> Iterator[Server]:
    yield from _serve(tls_context=_server_context(certificate), require_starttls=True, auth_required=True, authenticator=_authenticate)


@pytest.fixture(scope="module")
def tls_server(certificate: Certificate) -> Iterator[Server]:
    # TLS from the first byte: the login is encrypted although aiosmtpd knows only STARTTLS as "TLS" for AUTH.
    yield from _serve(ssl_context=_server_context(certificate), auth_required=True, auth_require_tls=False, authenticator=_authenticate)


@pytest.fixture
def route_email(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[ProviderAccount], str]]:
    """Save a provider account block under a new name and route e-mail to it, as a user does with
    `notiflow provider add` and NOTIFLOW_ROUTES; returns the instance name."""

    def route(account: ProviderAccount) -> str:
        name = f"mail-{uuid.uuid4().hex[:8]}"
        ProviderAccount.register_type_and_schema()
        account.save(name, overwrite=True)
        monkeypatch.setenv("NOTIFLOW_ROUTES", json.dumps({"email": [name]}))
        get_settings.cache_clear()
        return name

    yield route
    close_providers()
    monkeypatch.undo()
    get_settings.cache_clear()


def direct(url: str, **account: Any) -> SmtpProvider:
    """An instance built from an account as the registry builds one, without saving the account."""
    provider = SmtpProvider.from_account("mail-direct", ProviderAccount(kind="smtp", url=url, sender=SENDER, **account), get_settings())
    provider.open()
    return provider


def address(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:8]}@example.com"


def outgoing(recipient: str, **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(**{"ref": f"{uuid.uuid4().hex}-1", "recipient": recipient, "text": TEXT, "sender": "notiflow",
                              "channel": Channel.EMAIL, **fields})


def email_task(tmp_path: Path, recipients: list[str], subject: str | None = "Order 1001") -> tuple[int, str]:
    """A campaign of e-mails to `recipients`, taken in and scheduled, its lease held; returns its id and the lease owner."""
    rows = [[recipient, TEXT, "email", subject] for recipient in recipients]
    task_id = make_task_from(write_xlsx(tmp_path / f"mail-{uuid.uuid4().hex[:6]}.xlsx", ["email", "text", "channel", "subject"], rows))
    assert intake.fn(task_id).accepted == len(recipients)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    return task_id, owner


def messages(engine: Any, task_id: int) -> dict[str, Message]:
    with Session(engine) as session:
        return {m.recipient: m for m in session.scalars(select(Message).where(Message.task_id == task_id))}


def task_uid(engine: Any, task_id: int) -> str:
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    assert uid is not None
    return uid


def html_of(email: EmailMessage) -> str:
    part = email.get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def test_smtp_declares_email_only_and_no_reports() -> None:
    capabilities = SmtpProvider.capabilities
    assert capabilities.channels == {Channel.EMAIL} and capabilities.reports is Reports.NONE and not capabilities.lookup
    assert capabilities.batch_size == 100 and not capabilities.polled


def test_a_campaign_email_reaches_the_server_with_its_subject_both_parts_and_an_open_pixel(
    route_email: Callable[[ProviderAccount], str], plain_server: Server, tmp_path: Path, engine: Any,
) -> None:
    name = route_email(ProviderAccount(kind="smtp", url=f"smtp://127.0.0.1:{plain_server.port}", sender=SENDER))
    anna = address("anna")
    task_id, owner = email_task(tmp_path, [anna])

    result = dispatch.fn(task_id, owner, Channel.EMAIL)

    assert (result.sent, result.refused, result.remaining) == (1, 0, 0)
    (got,) = plain_server.inbox.to(anna)
    message = messages(engine, task_id)[anna]
    ref = f"{task_uid(engine, task_id)}-{message.id}"
    email = got.email
    # The message's sender is "notiflow", not an address: the account's sender is the From.
    assert (got.mail_from, email["From"], email["To"], email["Subject"]) == (SENDER, SENDER, anna, "Order 1001")
    assert email["Message-ID"] == f"<{ref}@shop.example>" == message.provider_message_id
    assert email.get_content_type() == "multipart/alternative"
    plain = email.get_body(("plain",))
    assert plain is not None and plain.get_content().rstrip("\n") == TEXT  # type: ignore[attr-defined]
    html = html_of(email)
    assert "Hello,<br>\nyour order &lt;1001&gt; is ready &amp; waiting." in html
    pixel = re.search(r'<img src="([^"]+)" width="1" height="1"', html)
    assert pixel is not None
    assert re.fullmatch(rf"{re.escape(get_settings().api_url)}/o/{ref}\.[0-9a-f]{{32}}\.gif", pixel.group(1))
    # Plain SMTP never reports delivery: the e-mail ends SENT, with no poll planned.
    assert (message.status, message.provider, message.next_poll_at) == (MessageStatus.SENT, name, None)


def test_one_connection_carries_batch_after_batch(
    route_email: Callable[[ProviderAccount], str], plain_server: Server, tmp_path: Path, engine: Any,
) -> None:
    route_email(ProviderAccount(kind="smtp", url=f"smtp://127.0.0.1:{plain_server.port}", sender=SENDER))
    first, second = [address("first") for _ in range(3)], [address("second") for _ in range(2)]
    for recipients in (first, second):
        task_id, owner = email_task(tmp_path, recipients)
        assert dispatch.fn(task_id, owner, Channel.EMAIL).sent == len(recipients)
    peers = {got.peer for recipient in first + second for got in plain_server.inbox.to(recipient)}
    assert len(peers) == 1, f"the server saw {len(peers)} connections for two batches"


def test_a_connection_the_server_dropped_is_opened_again_for_the_next_batch(idle_dropping_server: Server) -> None:
    provider = direct(f"smtp://127.0.0.1:{idle_dropping_server.port}")
    inbox = idle_dropping_server.inbox
    try:
        first = provider.send([outgoing(address("before"))])
        closed = inbox.closed
        wait_until(lambda: inbox.closed > closed, timeout=5, what="the server to drop the idle connection")
        second = provider.send([outgoing(address("after"))])
    finally:
        provider.close()
    assert [a.error for a in first + second] == [None, None]
    assert len({got.peer for got in inbox.received[-2:]}) == 2


def test_a_refused_recipient_errors_that_email_only(
    route_email: Callable[[ProviderAccount], str], plain_server: Server, tmp_path: Path, engine: Any,
) -> None:
    route_email(ProviderAccount(kind="smtp", url=f"smtp://127.0.0.1:{plain_server.port}", sender=SENDER))
    anna, bob = address("anna"), address("bob")
    task_id, owner = email_task(tmp_path, [anna, REFUSED, bob])

    result = dispatch.fn(task_id, owner, Channel.EMAIL)

    assert (result.sent, result.refused, result.remaining) == (2, 1, 0)
    stored = messages(engine, task_id)
    assert (stored[anna].status, stored[bob].status) == (MessageStatus.SENT, MessageStatus.SENT)
    assert stored[REFUSED].status == MessageStatus.ERROR
    assert stored[REFUSED].status_description.endswith(f"550 5.1.1 <{REFUSED}>: mailbox unavailable")
    assert plain_server.inbox.to(anna) and plain_server.inbox.to(bob)


def test_a_busy_mailbox_waits_in_flight_while_the_rest_of_the_batch_goes(
    route_email: Callable[[ProviderAccount], str], plain_server: Server, tmp_path: Path, engine: Any,
) -> None:
    route_email(ProviderAccount(kind="smtp", url=f"smtp://127.0.0.1:{plain_server.port}", sender=SENDER))
    anna, bob = address("anna"), address("bob")
    task_id, owner = email_task(tmp_path, [anna, BUSY, bob])

    result = dispatch.fn(task_id, owner, Channel.EMAIL)

    assert (result.sent, result.refused, result.remaining, result.carrier_fault) == (2, 0, 1, None)
    stored = messages(engine, task_id)
    assert (stored[anna].status, stored[bob].status) == (MessageStatus.SENT, MessageStatus.SENT)
    # Not refused, not lost: handed and unanswered, it is sent again with its key after the hand-over deadline.
    busy = stored[BUSY]
    assert busy.handed_at is not None and busy.provider_message_id is None and busy.status == MessageStatus.QUEUED
    assert result.next_due_at == busy.handed_at + dt.timedelta(seconds=get_settings().handover_deadline_seconds)


def test_a_batch_the_server_takes_none_of_is_provider_unavailable(plain_server: Server) -> None:
    provider = direct(f"smtp://127.0.0.1:{plain_server.port}")
    try:
        with pytest.raises(ProviderUnavailable, match=r"450 4\.2\.1") as raised:
            provider.send([outgoing(BUSY), outgoing(BUSY)])
    finally:
        provider.close()
    assert raised.value.outcome_unknown is False  # the server said no: the e-mails surely were not taken


def test_without_a_subject_the_first_line_is_one_and_a_sender_address_is_the_from(plain_server: Server) -> None:
    provider = direct(f"smtp://127.0.0.1:{plain_server.port}")
    anna = address("anna")
    try:
        (answer,) = provider.send([outgoing(anna, sender="orders@shop.example", text="Your parcel\r\nhas left the depot")])
    finally:
        provider.close()
    (got,) = plain_server.inbox.to(anna)
    assert answer.error is None and (got.mail_from, got.email["From"]) == ("orders@shop.example", "orders@shop.example")
    assert got.email["Subject"] == "Your parcel"


def test_a_wrong_password_is_rejected_and_stored_nowhere(
    route_email: Callable[[ProviderAccount], str], starttls_server: Server, certificate: Certificate, tmp_path: Path, engine: Any,
) -> None:
    route_email(ProviderAccount(
        kind="smtp", url=f"smtp://127.0.0.1:{starttls_server.port}", sender=SENDER, username=LOGIN, password=WRONG_PASSWORD,
        options={"cafile": str(certificate.cert)},
    ))
    anna = address("anna")
    task_id, owner = email_task(tmp_path, [anna])

    result = dispatch.fn(task_id, owner, Channel.EMAIL)

    assert (result.sent, result.refused) == (0, 1), result
    assert not starttls_server.inbox.to(anna)
    with pytest.raises(ProviderRejected, match=r"refused the login of 'mailer' \(535") as raised:
        provider_for(Channel.EMAIL).send([outgoing(anna)])
    message = messages(engine, task_id)[anna]
    assert message.status == MessageStatus.ERROR and "refused the login of 'mailer'" in message.status_description
    with Session(engine) as session:
        events = session.scalars(select(StatusEvent.description).where(StatusEvent.task_id == task_id)).all()
    for text in [str(raised.value), message.status_description, *events]:
        assert WRONG_PASSWORD not in text


def test_starttls_with_a_login_delivers(starttls_server: Server, certificate: Certificate) -> None:
    provider = direct(f"smtp://127.0.0.1:{starttls_server.port}", username=LOGIN, password=PASSWORD,
                      options={"cafile": str(certificate.cert)})
    anna = address("anna")
    try:
        (answer,) = provider.send([outgoing(anna)])
    finally:
        provider.close()
    (got,) = starttls_server.inbox.to(anna)
    assert answer.error is None and answer.provider_message_id == got.email["Message-ID"]
    assert got.tls and got.authenticated


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS: aiosmtpd counts only STARTTLS
def test_implicit_tls_with_a_login_delivers(tls_server: Server, certificate: Certificate) -> None:
    provider = direct(f"smtps://127.0.0.1:{tls_server.port}", username=LOGIN, password=PASSWORD,
                      options={"cafile": str(certificate.cert)})
    anna = address("anna")
    try:
        (answer,) = provider.send([outgoing(anna)])
    finally:
        provider.close()
    (got,) = tls_server.inbox.to(anna)
    assert answer.error is None and got.tls and got.authenticated


def test_a_certificate_nobody_said_to_trust_is_rejected_with_what_to_do(starttls_server: Server) -> None:
    provider = direct(f"smtp://127.0.0.1:{starttls_server.port}", username=LOGIN, password=PASSWORD)
    try:
        with pytest.raises(ProviderRejected, match="cafile"):
            provider.send([outgoing(address("anna"))])
    finally:
        provider.close()


def test_opening_the_email_fetches_a_pixel_that_counts_one_open_and_a_forged_one_counts_none(
    route_email: Callable[[ProviderAccount], str], plain_server: Server, tmp_path: Path, engine: Any,
) -> None:
    route_email(ProviderAccount(kind="smtp", url=f"smtp://127.0.0.1:{plain_server.port}", sender=SENDER))
    anna = address("anna")
    task_id, owner = email_task(tmp_path, [anna])
    assert dispatch.fn(task_id, owner, Channel.EMAIL).sent == 1
    (got,) = plain_server.inbox.to(anna)
    pixel = re.search(r'<img src="([^"]+)"', html_of(got.email))
    assert pixel is not None
    path = "/" + pixel.group(1).split("/", 3)[3]  # the mail client asks the API for the pixel, without a token
    forged = re.sub(r"\.[0-9a-f]{32}\.gif$", "." + "0" * 32 + ".gif", path)

    with TestClient(app, base_url="http://127.0.0.1") as mail_client:
        opened = mail_client.get(path)
        refused = mail_client.get(forged)

    for answer in (opened, refused):  # a forged token still gets an image: an e-mail never shows a broken one
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"
        assert answer.content[:6] == b"GIF89a" and struct.unpack("<HH", answer.content[6:10]) == (1, 1)
        assert "no-cache" in answer.headers["cache-control"]
    message = messages(engine, task_id)[anna]
    assert message.opens == 1 and message.opened_at is not None
    report = load_workbook(build_report.fn(task_id).path, read_only=True)
    rows = list(report["Messages"].iter_rows(values_only=True))
    assert rows[1][MESSAGE_COLUMNS.index("e-mail views")] == 1
