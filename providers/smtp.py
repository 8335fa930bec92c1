"""E-mail through an SMTP server (kind "smtp"): one connection per instance, kept across batches.

An account reads `smtp://host:port` (STARTTLS: required when the account logs in, else used when the
server offers it) or `smtps://host:port` (TLS from the first byte), with its username and password
(AUTH) and its sender address. Options: `starttls` (true: always, false: never), `cafile` (the CA
certificates to trust, for a private CA or a self-signed server), `validate_certs` (default true),
`timeout` (seconds per SMTP command, default 10), `local_hostname` (the EHLO name) and `subject`
(the subject of e-mails whose row has none; else the text's first line).

Why a background event loop: aiosmtplib speaks asyncio while the Provider protocol is synchronous,
and an SMTP connection belongs to the loop that opened it. `asyncio.run` per batch would close the
loop, and the connection with it; an `asyncio.Runner` kept per instance would keep it, but its loop
runs only during a call, so a connection the server dropped between batches would be found dead only
by the next command, and it cannot be driven from a thread that already runs a loop. So each open
instance runs one loop in its own thread (started in open(), stopped in close()); send() hands it a
coroutine (asyncio.run_coroutine_threadsafe) and waits for the answer, under a lock, since one SMTP
connection carries one transaction at a time. The loop keeps reading the socket between batches, so a
server's idle timeout is noticed when it happens; each batch still starts with a NOOP, and connects
(and logs in) again when the connection is gone.

What each e-mail is: From the message's sender when it is an address, else the account's; To the
recipient; Subject the row's `subject`; a text part and an HTML part (the text, escaped, line breaks
kept) with a 1×1 open-tracking pixel at `{public_url or api_url}/o/{token}.gif`, the token signed with
the server's secret (models.signing.open_token), so the API counts opens. Its Message-ID is made of
our reference (the idempotency key), so an e-mail sent again after an unknown outcome carries the same
Message-ID as the first, and a mail system or a reader can tell the two are one; it is also the
provider message id.

Receipt codes: plain SMTP reports nothing after it accepted an e-mail (no delivery report, no status to
poll, nothing to look up by reference), so an accepted e-mail ends SENT. The server's replies map:
- 2xx to DATA: accepted (SENT);
- 5xx to MAIL, RCPT or DATA (mailbox unknown, sender or content refused): that e-mail alone is ERROR,
  with the server's reason;
- 4xx to RCPT (mailbox busy, greylisting): that e-mail alone waits. It is left out of the answer, so
  it stays in flight and dispatch reconciles it by key: this kind cannot be looked up, so it is sent
  again with the same Message-ID, once the hand-over deadline has passed (about the wait greylisting
  asks for); the rest of the batch goes on, so one slow mailbox holds up nobody else's e-mail;
- 4xx to MAIL or DATA, 421 (too many messages, local error, shutting down), a dropped connection or
  a timeout: the server is in trouble, and the batch stops there;
- when nothing of a batch was answered, send raises ProviderUnavailable (outcome unknown when the
  connection broke mid-transaction), so dispatch gives the batch back and backs off; otherwise it
  returns the answers it has, and the e-mails it did not answer stay in flight as above;
- a refused login (535) raises ProviderRejected, naming the user, never the password.
"""
from __future__ import annotations

import asyncio
import html
import logging
import re
import ssl
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

import aiosmtplib
from pydantic import SecretStr

from models.settings import Settings
from models.signing import open_token
from models.status import Channel
from providers.base import (
    Acceptance,
    Capabilities,
    OutgoingMessage,
    Provider,
    ProviderRejected,
    ProviderUnavailable,
    Reports,
)

if TYPE_CHECKING:
    from providers.registry import ProviderAccount

logger = logging.getLogger("notiflow.providers.smtp")

T = TypeVar("T")

_ADDRESS = re.compile(r"[^@\s<>\"]{1,64}@[^@\s.<>\"]+(?:\.[^@\s.<>\"]+)+")
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
SUBJECT_CHARS = 78  # a default subject (the text's first line) is cut to one header line


class SmtpProvider(Provider):
    """An SMTP server, reached through one connection kept across batches."""

    kind = "smtp"
    capabilities = Capabilities(
        channels=frozenset({Channel.EMAIL}),
        # One SMTP transaction per e-mail, one after the other on the connection: a batch is a unit of bookkeeping.
        batch_size=100,
        in_flight=1,
        max_body_bytes=10_000_000,
        reports=Reports.NONE,
        lookup=False,
    )

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        tracking_url: str,
        implicit_tls: bool = False,
        start_tls: bool | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        cafile: str | None = None,
        validate_certs: bool = True,
        timeout: float = 10.0,
        local_hostname: str | None = None,
        default_subject: str | None = None,
    ):
        super().__init__(name)
        if not _ADDRESS.fullmatch(sender):
            raise ProviderRejected(f"{name}: the sender {sender!r} is not an e-mail address; set the account's sender "
                                   "to the address e-mails come from, like news@example.com")
        if implicit_tls and start_tls:
            raise ProviderRejected(f"{name}: smtps:// is TLS from the first byte; drop the starttls option, or use smtp://")
        self.host, self.port, self.sender = host, port, sender
        self.tracking_url = tracking_url.rstrip("/")
        self.implicit_tls = implicit_tls
        # Never a password in the clear: an account that logs in insists on STARTTLS unless told otherwise.
        self.start_tls = start_tls if start_tls is not None or implicit_tls else (True if password else None)
        self.username = username
        self._password = password
        self.cafile = cafile
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.default_subject = default_subject
        # The Message-ID's right side: the sender's domain, so ids are unique to this account's mail (a domain too
        # long for the stored provider id, 128 characters with the ref, gives way to a fixed one).
        domain = sender.rpartition("@")[2]
        self.id_domain = domain if len(domain) <= 64 else "notiflow.invalid"
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._smtp: aiosmtplib.SMTP | None = None

    @classmethod
    def from_account(cls, name: str, account: ProviderAccount, settings: Settings) -> Self:
        url = urlsplit(account.url or "")
        if url.scheme not in DEFAULT_PORTS or not url.hostname:
            raise ProviderRejected(f"{name}: the account's url {account.url!r} is not an SMTP server; "
                                   "write smtp://host:port (STARTTLS) or smtps://host:port (TLS)")
        if not account.sender:
            raise ProviderRejected(f"{name}: the account has no sender; set it to the address e-mails come from")
        options = account.options
        start_tls = _flag(name, options, "starttls")
        return cls(
            name,
            host=url.hostname,
            port=url.port or DEFAULT_PORTS[url.scheme],
            sender=account.sender,
            tracking_url=settings.public_url or settings.api_url,
            implicit_tls=url.scheme == "smtps",
            start_tls=start_tls,
            username=account.username,
            password=account.password,
            cafile=options.get("cafile"),
            validate_certs=_flag(name, options, "validate_certs") is not False,
            timeout=float(options.get("timeout", 10.0)),
            local_hostname=options.get("local_hostname"),
            default_subject=options.get("subject"),
        )

    # --- the instance's event loop -------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._start_loop()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            try:
                self._run(self._disconnect(), timeout=self.timeout + 1)
            except Exception:  # noqa: BLE001 (a polite QUIT is best effort: the socket is closed below anyway)
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
            self._loop = self._thread = None

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"smtp-{self.name}", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the instance's loop and wait for its result (each SMTP command has its own timeout)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._start_loop())
        return future.result(timeout)

    # --- sending ---------------------------------------------------------------------------------------

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        mine = list(batch)
        if not mine:
            return []
        if len(mine) > self.capabilities.batch_size:
            raise ProviderRejected(f"{self.name}: {len(mine)} e-mails in one batch; at most {self.capabilities.batch_size}")
        with self._lock:
            self.requests += 1
            # Each SMTP command times out by itself; this bounds the whole batch should the loop itself hang.
            future = asyncio.run_coroutine_threadsafe(self._send(mine), self._start_loop())
            started = time.perf_counter()
            try:
                answers = future.result(self.timeout * (6 + 4 * len(mine)))
                logger.debug("%s sent %d of %d e-mails in %.3f s", self.name, len(answers), len(mine), time.perf_counter() - started)
                return answers
            except TimeoutError:
                future.cancel()
                self._start_loop().call_soon_threadsafe(self._drop)
                raise ProviderUnavailable(f"{self.name}: {len(mine)} e-mails to {self.host} took too long",
                                          outcome_unknown=True) from None

    async def _send(self, batch: list[OutgoingMessage]) -> list[Acceptance]:
        smtp = await self._connected()
        answers: list[Acceptance] = []
        deferred: list[str] = []  # why each e-mail the server asked to try again later was not taken
        for message in batch:
            try:
                email, sender, message_id = self.email(message)
            except ValueError as exc:
                answers.append(Acceptance(message.ref, None, error=f"cannot be written as an e-mail: {exc}"))
                continue
            try:
                await smtp.send_message(email, sender=sender, recipients=[message.recipient])
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refusal = exc.recipients[0]
                code, reason = refusal.code, refusal.message
                if 400 <= code < 500 and code != 421:
                    deferred.append(f"{code} {reason}")
                    continue
            except aiosmtplib.SMTPResponseException as exc:
                code, reason = exc.code, exc.message
            except aiosmtplib.SMTPNotSupported as exc:  # e.g. a non-ASCII address and a server without SMTPUTF8
                answers.append(Acceptance(message.ref, None, error=f"{self.host} cannot take it: {exc}"))
                continue
            except (aiosmtplib.SMTPException, OSError) as exc:
                # A dropped connection or a timeout, maybe after the server had the whole e-mail.
                self._drop()
                return self._stopped(answers, deferred, f"lost the connection to {self.host} ({type(exc).__name__}: {exc})",
                                     outcome_unknown=True)
            else:
                answers.append(Acceptance(message.ref, message_id))
                continue
            if code >= 500:
                answers.append(Acceptance(message.ref, None, error=f"{code} {reason}"))
                continue
            if code == 421:  # the server is closing the connection
                self._drop()
            return self._stopped(answers, deferred, f"{self.host} answered {code} {reason}", outcome_unknown=False)
        if deferred:
            return self._stopped(answers, deferred, f"{self.host} deferred {len(deferred)} e-mails, e.g. {deferred[0]}",
                                 outcome_unknown=False)
        return answers

    def _stopped(self, answers: list[Acceptance], deferred: list[str], reason: str, *, outcome_unknown: bool) -> list[Acceptance]:
        """Some e-mails were not taken for now: raise when nothing of the batch was answered, else return what was."""
        if not answers:
            raise ProviderUnavailable(f"{self.name}: {reason}", outcome_unknown=outcome_unknown)
        logger.warning("%s: %d e-mails answered; the others are sent again by their key: %s", self.name, len(answers), reason)
        return answers

    async def _connected(self) -> aiosmtplib.SMTP:
        """The open, logged-in connection: the kept one if the server still answers, else a new one."""
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.noop()
                return self._smtp
            except (aiosmtplib.SMTPException, OSError):
                self._drop()
        password = self._password.get_secret_value() if self._password else None
        smtp = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, use_tls=self.implicit_tls, start_tls=self.start_tls,
            username=self.username, password=password, timeout=self.timeout, validate_certs=self.validate_certs,
            cert_bundle=self.cafile, local_hostname=self.local_hostname,
        )
        where = f"{self.host}:{self.port}"
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ProviderRejected(self._hide(
                f"{self.name}: {where} refused the login of {self.username!r} ({exc.code} {exc.message}); "
                "check the account's username and password", password)) from None
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise ProviderUnavailable(f"{self.name}: cannot reach {where} ({type(exc).__name__}: {exc})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            fault = self._hide(f"{self.name}: {where} answered {exc.code} {exc.message} on connecting", password)
            if exc.code >= 500:
                raise ProviderRejected(fault) from None
            raise ProviderUnavailable(fault) from None
        except aiosmtplib.SMTPConnectError as exc:
            if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                raise ProviderRejected(f"{self.name}: the certificate of {where} failed verification ({exc.__cause__}); "
                                       "trust its CA with the account's option cafile") from None
            raise ProviderUnavailable(f"{self.name}: cannot reach {where} ({exc})") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ProviderRejected(f"{self.name}: the certificate of {where} failed verification ({exc}); "
                                   "trust its CA with the account's option cafile") from None
        except aiosmtplib.SMTPException as exc:
            # No AUTH offered, no STARTTLS although required: the account and the server disagree; retrying will not help.
            raise ProviderRejected(self._hide(f"{self.name}: {where}: {exc}", password)) from None
        except OSError as exc:
            raise ProviderUnavailable(f"{self.name}: cannot reach {where} ({type(exc).__name__}: {exc})") from exc
        self._smtp = smtp
        return smtp

    @staticmethod
    def _hide(text: str, password: str | None) -> str:
        # A server that echoes what it was sent must not put the password into a stored error.
        return text.replace(password, "***") if password else text

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def _disconnect(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
        self._drop()

    # --- the e-mail ------------------------------------------------------------------------------------

    def email(self, message: OutgoingMessage) -> tuple[EmailMessage, str, str]:
        """The e-mail of `message`, its envelope sender and its Message-ID (ValueError if it cannot be one)."""
        sender = message.sender if _ADDRESS.fullmatch(message.sender or "") else self.sender
        message_id = f"<{message.ref}@{self.id_domain}>"
        email = EmailMessage()
        email["From"] = sender
        email["To"] = message.recipient
        email["Subject"] = self._subject(message)
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = message_id
        email.set_content(message.text)
        email.add_alternative(self._html(message), subtype="html")
        return email, sender, message_id

    def _subject(self, message: OutgoingMessage) -> str:
        subject = str(message.params.get("subject") or self.default_subject or "")
        if not subject:
            first_line = next((line for line in message.text.splitlines() if line.strip()), "")
            subject = first_line if len(first_line) <= SUBJECT_CHARS else first_line[: SUBJECT_CHARS - 1].rstrip() + "…"
        # A header is one line: line breaks in a cell would end it (or forge the next header).
        return " ".join(subject.split())

    def _html(self, message: OutgoingMessage) -> str:
        body = html.escape(message.text).replace("\r\n", "\n").replace("\n", "<br>\n")
        pixel = f"{self.tracking_url}/o/{open_token(message.ref)}.gif"
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
            f"<div>{body}</div>\n"
            f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" style="display:block;border:0">\n'
            "</body></html>\n"
        )


def _flag(name: str, options: dict[str, Any], key: str) -> bool | None:
    """A true/false option, from JSON or from `notiflow provider add --option KEY=VALUE` (a string); None when unset."""
    value = options.get(key)
    if value is None or isinstance(value, bool):
        return value
    spelled = str(value).strip().lower()
    if spelled in ("true", "1", "yes", "on"):
        return True
    if spelled in ("false", "0", "no", "off"):
        return False
    raise ProviderRejected(f"{name}: the option {key}={value!r} is not true or false")
