"""SMS through a Kannel gateway: `GET /cgi-bin/sendsms` per message, delivery reports pushed to our dlr-url.

Kannel's delivery-report types (the `%d` of the dlr-url) → (our status, what it means):

| type | Kannel's name          | status      | meaning                                                   |
|------|------------------------|-------------|-----------------------------------------------------------|
| 8    | delivered to SMSC      | SENT        | the operator's SMSC took it (`%A` reads `ACK/`)           |
| 4    | queued on SMSC         | PENDING     | buffered at the SMSC: the phone is off or out of reach    |
| 1    | delivered to phone     | DELIVERED   | delivered                                                 |
| 2    | non-delivered to phone | UNDELIVERED | the SMSC gave up; its receipt (`%A`) says why (stat, err) |
| 16   | non-delivered to SMSC  | ERROR       | the SMSC refused our submit (`%A`: `NACK/code/reason`)    |

Quirks, measured on Kannel 1.4.5 (see shared/spec/delivery.md):
- sendsms answers 202 `0: Accepted for delivery` (or `3: Queued for later delivery`) and gives no
  message id, so our reference (OutgoingMessage.ref) is the provider id: it travels in the dlr-url's
  query and comes back with every report. `%I` changes between the two reports of one message.
- The reports of one message may arrive in any order (a `1` before its `8`): the status writer never
  moves a status backwards, so the late `8` changes nothing.
- A report can arrive before our dispatcher recorded the 202 (it is written once the batch is over).
  The API then answers 404 and smsbox asks again after `http-queue-delay` seconds, **if** its group
  has `http-request-retry` set (default 0: the report is dropped, and the message ends UNDELIVERED
  when its last poll passes with no report). Set e.g. `http-request-retry = 5`, `http-queue-delay = 2`.
- Kannel splits a long text itself (153 GSM-7 / 67 UCS-2 units a part, with a UDH), exactly as
  tasks/compose/segment.py counts parts, but sends at most the sendsms-user's `max-messages` parts
  and drops the rest silently, still answering 202. sendsms has no per-request `max-messages`
  parameter (1.4.5 ignores one). So the account declares that setting as `options.max_parts`
  (Kannel's default is 1) and a message of more parts is refused here, before sending, rather than
  billed whole and delivered cut.
- Non-GSM text must go with `coding=2&charset=UTF-8`, or Kannel sends `?` for every letter and still
  answers 202.
- 403 is either a wrong login (`Authorization failed for sendsms`: the whole batch is refused) or a
  route Kannel has no SMSC for (`Not routable. Do not try again.`: that message is refused); 400 is
  one message's fault (no receiver, a number the white/black list denies, no sender); 503 is
  `Temporal failure, try again later.`
- Kannel cannot be asked what became of a message, neither by its id nor by our reference: no poll,
  no lookup. A send whose outcome is unknown (a timeout) is reconciled by sending it again with the
  same reference (tasks/delivery/reconcile.py), so the recipient may get it twice: Kannel has no
  idempotency key. A message Kannel answered is never sent again.

Account options: `max_parts` (the sendsms-user's `max-messages`, default 1), `in_flight` (sendsms
requests at once, default 8), `smsc` (the smsc-id to route through), `dlr_mask` (default 31: every
report), `timeout` (seconds per request, default 5).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from models.errors import NotiflowError
from models.settings import Settings
from models.signing import webhook_secret
from models.status import Channel, MessageStatus
from providers.base import (
    Acceptance,
    Capabilities,
    OutgoingMessage,
    ProviderRejected,
    ProviderUnavailable,
    Reports,
    StatusReport,
)
from providers.per_message import Outcome, PooledHttpProvider, send_each

logger = logging.getLogger("notiflow.providers.kannel")

RECEIPT_CODES: dict[int, tuple[MessageStatus, str]] = {
    8: (MessageStatus.SENT, "accepted by the SMSC"),
    4: (MessageStatus.PENDING, "buffered at the SMSC"),
    1: (MessageStatus.DELIVERED, "delivered"),
    2: (MessageStatus.UNDELIVERED, "not delivered"),
    16: (MessageStatus.ERROR, "refused by the SMSC"),
}

SENDSMS_PATH = "/cgi-bin/sendsms"
# A batch's requests start within this many seconds; later ones wait for the next batch. Together
# with the per-request timeout this keeps one send call well inside the hand-over deadline (20 s),
# after which another process may reconcile the batch's messages.
BATCH_SECONDS = 10.0


class KannelAccountError(NotiflowError):
    """A Kannel provider account lacks what sendsms needs."""


class KannelGateway(PooledHttpProvider):
    """An account (a sendsms-user) at a Kannel smsbox."""

    kind = "kannel"
    capabilities = Capabilities(
        channels=frozenset({Channel.SMS}),
        # sendsms takes one message a request: the adapter spreads a batch over its own requests in flight
        # (the account's `in_flight` option), so the dispatcher makes one send() call at a time.
        batch_size=100,
        in_flight=1,
        max_parts=1,
        reports=Reports.PUSH,
        lookup=False,
    )

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        username: str,
        password: str,
        dlr_url: str,
        sender: str = "",
        max_parts: int = 1,
        in_flight: int = 16,
        smsc: str | None = None,
        dlr_mask: int = 31,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ):
        split = urlsplit(base_url)
        super().__init__(name, f"{split.scheme}://{split.netloc}", requests_in_flight=in_flight, timeout=timeout, transport=transport)
        # Kannel's `sendsms-url` may move the path; an account URL without one means the default.
        self.path = split.path if split.path not in ("", "/") else SENDSMS_PATH
        self._username = username
        self._password = password
        # Ends with `?secret=…`: each message appends its own reference and Kannel's escapes.
        self._dlr_url = dlr_url
        self.sender = sender
        self.smsc = smsc
        self.dlr_mask = dlr_mask
        # This account's numbers, read by the dispatcher like any provider's.
        self.capabilities = replace(type(self).capabilities, max_parts=max_parts)  # type: ignore[misc]

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        if not account.url or not account.username or account.password is None:
            raise KannelAccountError(
                f"the kannel account {name!r} needs url (the smsbox's sendsms address, e.g. http://host:13013), "
                "username and password (its sendsms-user's): set them in its provider account block"
            )
        options = dict(account.options or {})
        secret = webhook_secret(name)
        dlr_url = f"{settings.api_url.rstrip('/')}/dlr/{quote(name, safe='')}?secret={secret}"
        return cls(
            name, account.url, username=account.username, password=account.password.get_secret_value(),
            dlr_url=dlr_url, sender=account.sender or "", max_parts=int(options.get("max_parts", 1)),
            in_flight=int(options.get("in_flight", 16)), smsc=options.get("smsc"),
            dlr_mask=int(options.get("dlr_mask", 31)), timeout=float(options.get("timeout", 5.0)),
        )

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        """One sendsms request per message, `in_flight` at once.

        Kannel's answers are returned; a message it did not answer (5xx, no connection, a timeout, or
        not started within BATCH_SECONDS) is left out, so the dispatcher reconciles it (sends it again
        with the same reference). When no message got an answer the fault is raised instead, so the
        dispatcher counts it as the carrier's.
        """
        mine = list(batch)
        if not mine:
            return []
        outcomes = send_each(self._requests(), mine, self._send_one, start_within=BATCH_SECONDS)
        answered = [o.acceptance for o in outcomes if o is not None and o.acceptance is not None]
        login = next((o.refused_login for o in outcomes if o is not None and o.refused_login), None)
        faults = [o.fault for o in outcomes if o is not None and o.fault is not None]
        if not answered:
            if login is not None:
                raise login
            if faults:
                unknown = any(f.outcome_unknown for f in faults)
                raise ProviderUnavailable(str(faults[0]), retry_after=faults[0].retry_after, outcome_unknown=unknown)
            raise ProviderUnavailable(f"{self.name}: no sendsms request started within {BATCH_SECONDS:.0f} s")
        if login is not None:
            answered += [Acceptance(ref=m.ref, provider_message_id=None, error=str(login))
                         for m, o in zip(mine, outcomes) if o is not None and o.refused_login]
        if len(answered) < len(mine):
            logger.warning("%s: %d of %d messages got no answer from Kannel; they are reconciled (sent again)",
                           self.name, len(mine) - len(answered), len(mine))
        return answered

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        max_parts = self.capabilities.max_parts or 1
        if message.parts > max_parts:
            return Outcome(Acceptance(
                ref=message.ref, provider_message_id=None,
                error=f"{message.parts} SMS parts, more than the {max_parts} this Kannel account sends (its sendsms-user's "
                      "max-messages); Kannel would cut the rest: raise max-messages and the account's options.max_parts",
            ))
        params: dict[str, Any] = {
            "username": self._username, "password": self._password, "to": message.recipient, "text": message.text,
            "charset": "UTF-8", "dlr-mask": self.dlr_mask,
            "dlr-url": f"{self._dlr_url}&ref={quote(message.ref, safe='')}&type=%d&reply=%A&smsc=%F&at=%T",
        }
        if message.encoding == "UCS-2":
            params["coding"] = 2
        sender = message.sender or self.sender
        if sender:
            params["from"] = sender
        if self.smsc:
            params["smsc"] = self.smsc
        try:
            response = self._sendsms(params)
        except ProviderUnavailable as exc:
            return Outcome(fault=exc)
        answer = response.text.strip()[:200]
        status = response.status_code
        if status == 202:
            # No id from Kannel: our reference is the id its reports carry back (see the module's quirks).
            return Outcome(Acceptance(ref=message.ref, provider_message_id=message.ref))
        if status == 403 and answer.startswith("Authorization failed"):
            return Outcome(refused_login=ProviderRejected(
                f"Kannel refused the login of {self.name} (HTTP 403 {answer!r}): check the account's username and "
                "password against its sendsms-user group"
            ))
        if status in (400, 403):
            return Outcome(Acceptance(ref=message.ref, provider_message_id=None, error=f"Kannel answered HTTP {status} {answer!r}"))
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After")
            return Outcome(fault=ProviderUnavailable(
                f"{self.name}: Kannel answered HTTP {status} {answer!r}",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            ))
        # Anything else (a proxy's 404, a 200 from something that is not smsbox): Kannel did not take it.
        return Outcome(Acceptance(ref=message.ref, provider_message_id=None,
                                   error=f"unexpected answer HTTP {status} {answer!r} from {self.path}: is the account URL Kannel's smsbox?"))

    def _sendsms(self, params: dict[str, Any]) -> httpx.Response:
        """One GET /cgi-bin/sendsms; transport trouble as ProviderUnavailable. The status is the caller's to read:
        HttpProvider._request would raise one error for a 403 whether the login or the one message was refused."""
        with self._lock:
            self.requests += 1
        started = time.perf_counter()
        try:
            return self._client.get(self.path, params=params)
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"{self.name}: GET {self.path} timed out ({type(exc).__name__}); Kannel may have taken the message",
                outcome_unknown=True,
            ) from None  # the exception's request holds the password in its URL
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.name}: GET {self.path} failed: {type(exc).__name__}: {_without(str(exc), self._password)}") from None
        finally:
            logger.debug("%s GET %s took %.3f s", self.name, self.path, time.perf_counter() - started)

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        """Read one delivery report: the dlr-url's query (`ref`, `type`, `reply`, `smsc`, `at`); ValueError if it is not one."""
        try:
            ref = str(payload["ref"])
            kind = int(payload["type"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{self.name}: a Kannel delivery report has ref and type (the dlr-url's query); got {str(payload)[:200]}"
            ) from exc
        if not ref:
            raise ValueError(f"{self.name}: a Kannel delivery report with an empty ref")
        if kind not in RECEIPT_CODES:
            logger.warning("%s: Kannel sent an unknown report type %r for %s", self.name, kind, ref)
            return []
        status, meaning = RECEIPT_CODES[kind]
        reason = _reason(str(payload.get("reply") or ""))
        description = f"{meaning}: {reason}" if reason and status in (MessageStatus.UNDELIVERED, MessageStatus.ERROR) else meaning
        return [StatusReport(provider_message_id=ref, status=status, description=description, at=_report_time(payload.get("at")), ref=ref)]


def _reason(reply: str) -> str:
    """The why of a report's `%A`: an SMPP receipt's `stat:… err:…`, else Kannel's own text (`NACK/11/Invalid …`)."""
    reply = reply.strip()
    if "stat:" in reply:
        words = [w for w in reply.split() if w.startswith(("stat:", "err:"))]
        return " ".join(words)
    return reply[:200]


def _report_time(value: Any) -> datetime:
    """Kannel's `%T` (Unix seconds); now if it is missing or not a number."""
    try:
        return datetime.fromtimestamp(int(str(value)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _without(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text

