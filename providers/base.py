"""The one interface every provider adapter implements, and the request plumbing they share.

Adapters take and return plain data (a batch of outgoing messages, a list of status reports); they
know neither the database nor Prefect. The base class times, logs and counts every request, so an
adapter writes only its own request and its receipt-code mapping.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Self

import httpx

from models.errors import NotiflowError
from models.status import Channel, MessageStatus

logger = logging.getLogger("notiflow.providers")


@dataclass(frozen=True)
class OutgoingMessage:
    """One message handed to a provider. `ref` is our idempotency key: unique across databases.

    `recipient` is what its channel sends to: a phone (E.164), an e-mail address, a device token or a chat id.
    """

    ref: str
    recipient: str
    text: str
    sender: str
    channel: Channel
    # How the text is counted (GSM-7 or UCS-2) and into how many SMS parts: what the provider must send and bills.
    encoding: str = "GSM-7"
    parts: int = 1
    # The row's other params (spec params.md: subject, image url, button text...), for adapters whose channel uses them.
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Acceptance:
    """The provider's answer for one message of a batch: its id, or why it refused that message."""

    ref: str
    provider_message_id: str | None
    error: str | None = None
    duplicate: bool = False
    # A multipart SMS sent part by part (SMPP): each part's id, in order; provider_message_id is the first.
    part_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusReport:
    provider_message_id: str
    status: MessageStatus
    description: str
    at: datetime
    ref: str | None = None


@dataclass(frozen=True)
class PhoneCheck:
    """A phone check (HLR lookup): whether the number is live, and on which network."""

    phone: str
    status: str  # live, absent or unknown
    description: str
    operator: str | None
    roaming: bool
    ported: bool
    price: Decimal
    at: datetime


class ProviderError(NotiflowError):
    """A provider call failed."""


class ProviderUnavailable(ProviderError):
    """The provider could not take the request now (5xx, 429, timeout, connection): try again later.

    `outcome_unknown` is true when the request may have reached the provider (a timeout): the
    messages must be reconciled through their idempotency key, never counted as unsent.
    `answered` holds the batch's messages the provider did answer before the fault (an SMPP window cut
    short by throttling): they are recorded as answered, and only the others are given back.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, outcome_unknown: bool = False,
                 answered: Sequence[Acceptance] = ()):
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.answered = list(answered)


class ProviderRejected(ProviderError):
    """The provider refused the whole request (4xx other than 429): retrying will not help."""


class LookupUnsupported(ProviderRejected):
    """The provider cannot say what became of a message by our reference."""


class Reports(StrEnum):
    """How a provider tells what became of a message."""

    PUSH = "push"  # it calls us (a webhook, an SMPP deliver_sm); polling is only a safety net if it can be polled
    POLL = "poll"  # we ask it
    PUSH_AND_POLL = "push and poll"
    NONE = "none"  # accepted is all we ever learn (plain SMTP): the message ends SENT


# Seconds after sending at which a provider that can be polled is asked; the last entry is the last poll (spec §6).
DEFAULT_POLL_SCHEDULE = (60.0, 300.0, 900.0, 1800.0, 3600.0, 2 * 3600.0, 4 * 3600.0, 8 * 3600.0, 24 * 3600.0)


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, as data: the dispatcher, the poller and the API read it, never an adapter's code."""

    channels: frozenset[Channel]
    # Most messages in one request (an SMPP or SMTP adapter takes a batch and sends it message by message).
    batch_size: int = 100
    # send() calls the dispatcher may have outstanding at once (an adapter whose service takes one message
    # a request spreads a batch over its own requests instead, and declares 1), and the most messages
    # per second (None: no pacing).
    in_flight: int = 1
    per_second: float | None = None
    max_body_bytes: int = 1_000_000
    # The longest text one message may carry (a messenger's limit, in characters); longer ones are refused
    # before any request. None: no limit of its own (SMS text is split into parts instead).
    max_text_chars: int | None = None
    # The most SMS parts of one message the provider sends (None: no limit, or not SMS).
    max_parts: int | None = None
    reports: Reports = Reports.POLL
    # Whether it can say what became of a message by our reference (how a send with no answer is reconciled).
    lookup: bool = False
    poll_schedule: tuple[float, ...] = DEFAULT_POLL_SCHEDULE

    @property
    def polled(self) -> bool:
        return self.reports in (Reports.POLL, Reports.PUSH_AND_POLL)


# Where a provider hands the status reports that reach it on its own connection (an SMPP deliver_sm, read
# on the bind's thread) rather than through our webhook: called with the instance name and the reports,
# it writes them and returns those it could not place yet (their message's id is not recorded yet), which
# the provider offers again later. The registry gives it to every instance, from the tasks layer, so
# providers never import the database.
ReportSink = Callable[[str, Sequence["StatusReport"]], Sequence["StatusReport"]]


class Provider(ABC):
    """A provider instance: one account of one kind of outside service, named by its instance name.

    The protocol knows nothing of transport: an HTTP adapter holds an httpx client (HttpProvider), an
    SMPP adapter a bind, an SMTP adapter a connection. The dispatcher owns instances (see
    providers.registry): it opens one once per process and keeps it across batches, so a bind or a
    connection outlives a batch, and closes it when the process ends.
    """

    # The kind of service ("sandbox", "kannel", "smpp", "smtp", "http"): how an account names its adapter.
    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    # Set by the registry before open(); None when the instance is used on its own.
    report_sink: ReportSink | None = None

    def __init__(self, name: str):
        # The instance name: stored with every message it carries, and the path of its webhook route.
        self.name = name
        self.requests = 0

    def open(self) -> None:
        """Connect (bind, log in) before the first request; adapters that connect per request do nothing."""

    def close(self) -> None:
        """Let go of the connection; the instance may be opened again."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        """Hand a batch over; an Acceptance per message the provider answered, in any order. A message left
        out (its request never started, or went unanswered) stays handed over and is reconciled by its
        idempotency key like one whose call timed out: asked by reference, or sent again with the same key."""

    def poll(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        """Ask the current status of messages sent earlier; adapters of providers that cannot be asked refuse."""
        raise ProviderRejected(f"{self.name} cannot be asked for a status ({self.capabilities.reports.value})")

    def lookup(self, refs: Sequence[str]) -> list[Acceptance]:
        """What became of messages whose send had no answer: an Acceptance with the provider's id for each
        ref it accepted; refs it never received come back without an id. Adapters of providers that
        cannot be asked by reference raise LookupUnsupported (a resend with the same key reconciles)."""
        raise LookupUnsupported(f"{self.name} cannot look messages up by reference")

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        """Turn a pushed delivery report into status reports (ValueError if it is not one); adapters
        without webhooks refuse."""
        raise ProviderRejected(f"{self.name} does not push delivery reports")

    def check_phones(self, phones: Sequence[str]) -> list[PhoneCheck]:
        """Phone checks (HLR); adapters whose service has none refuse."""
        raise ProviderRejected(f"{self.name} does not check phones")


class HttpProvider(Provider):
    """A provider spoken to over HTTP: one httpx client per instance, kept across batches."""

    def __init__(self, name: str, base_url: str, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        super().__init__(name)
        self._client_options: dict[str, Any] = {"base_url": base_url, "timeout": timeout, "transport": transport}
        self._client = httpx.Client(**self._client_options)

    def open(self) -> None:
        if self._client.is_closed:
            self._client = httpx.Client(**self._client_options)

    def close(self) -> None:
        self._client.close()

    def _exchange(self, method: str, path: str, *, shown_path: str | None = None, **kwargs: Any) -> httpx.Response:
        """Send one request and return the answer whatever its HTTP code (an adapter whose service explains
        a refusal in the body maps it itself); transport trouble becomes ProviderUnavailable. `shown_path`
        is what messages name instead of `path` when the path holds a secret (Telegram's bot token)."""
        self.requests += 1
        shown = shown_path or path
        started = time.perf_counter()
        try:
            return self._client.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ProviderUnavailable(f"{self.name}: {method} {shown} could not connect ({type(exc).__name__})") from None
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"{self.name}: {method} {shown} timed out ({type(exc).__name__}); the service may have taken it",
                outcome_unknown=True,
            ) from None
        except httpx.TransportError as exc:
            # The request may have gone before the connection broke; the exception's text may hold the URL.
            raise ProviderUnavailable(f"{self.name}: {method} {shown} failed ({type(exc).__name__})",
                                      outcome_unknown=True) from None
        finally:
            elapsed = time.perf_counter() - started
            logger.debug("%s %s %s took %.3f s", self.name, method, shown, elapsed)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request, mapping transport trouble onto ProviderUnavailable/ProviderRejected."""
        response = self._exchange(method, path, **kwargs)
        if response.status_code == 429:
            retry_after = response.headers.get("Retry-After")
            raise ProviderUnavailable(
                f"{self.name}: rate limited (HTTP 429)",
                retry_after=float(retry_after) if retry_after else None,
            )
        if response.status_code >= 500:
            raise ProviderUnavailable(f"{self.name}: HTTP {response.status_code} from {method} {path}")
        if response.status_code >= 400:
            raise ProviderRejected(f"{self.name}: HTTP {response.status_code} from {method} {path}: {response.text[:300]}")
        return response
