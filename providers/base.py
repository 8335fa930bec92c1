"""The one interface every provider adapter implements, and the request plumbing they share.

Adapters take and return plain data (a batch of outgoing messages, a list of status reports); they
know neither the database nor Prefect. The base class times, logs and counts every request, so an
adapter writes only its own request and its receipt-code mapping.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
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


@dataclass(frozen=True)
class Acceptance:
    """The provider's answer for one message of a batch: its id, or why it refused that message."""

    ref: str
    provider_message_id: str | None
    error: str | None = None
    duplicate: bool = False


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
    """

    def __init__(self, message: str, *, retry_after: float | None = None, outcome_unknown: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class ProviderRejected(ProviderError):
    """The provider refused the whole request (4xx other than 429): retrying will not help."""


class LookupUnsupported(ProviderRejected):
    """The provider cannot say what became of a message by our reference."""


class Provider(ABC):
    """A channel's outside service. Limits are data, declared by each adapter."""

    name: ClassVar[str]
    # The channel it carries: a class attribute for a one-channel service, set per instance by an
    # adapter whose service carries several (the sandbox carrier).
    channel: Channel
    batch_size: ClassVar[int] = 100
    max_body_bytes: ClassVar[int] = 1_000_000
    # Seconds after sending at which to ask for a status; the last entry is the last poll.
    poll_schedule: ClassVar[tuple[float, ...]] = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600)

    def __init__(self, base_url: str, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self._client = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        """Hand a batch over; one Acceptance per message, in any order."""

    @abstractmethod
    def poll(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        """Ask the current status of messages sent earlier."""

    def lookup(self, refs: Sequence[str]) -> list[Acceptance]:
        """What became of messages whose send had no answer: an Acceptance with the provider's id for each
        ref it accepted; refs it never received come back without an id. Adapters of providers that
        cannot be asked by reference raise LookupUnsupported (a resend with the same key reconciles)."""
        raise LookupUnsupported(f"{self.name} cannot look messages up by reference")

    @classmethod
    def parse_webhook(cls, payload: Any) -> list[StatusReport]:
        """Turn a pushed delivery report into status reports (ValueError if it is not one); adapters
        without webhooks refuse."""
        raise ProviderRejected(f"{cls.name} does not push delivery reports")

    def check_phones(self, phones: Sequence[str]) -> list[PhoneCheck]:
        """Phone checks (HLR); adapters whose service has none refuse."""
        raise ProviderRejected(f"{self.name} does not check phones")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request, mapping transport trouble onto ProviderUnavailable/ProviderRejected."""
        self.requests += 1
        started = time.perf_counter()
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"{self.name}: {method} {path} timed out ({type(exc).__name__})", outcome_unknown=True
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.name}: {method} {path} failed: {exc}") from exc
        finally:
            elapsed = time.perf_counter() - started
            logger.debug("%s %s %s took %.3f s", self.name, method, path, elapsed)
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
