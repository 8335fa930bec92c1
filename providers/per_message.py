"""Services that take one message a request (Kannel's sendsms, many HTTP aggregators): a batch is sent
as that many requests, several at once, by the adapter itself (it declares in_flight=1 to the dispatcher)."""
from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from providers.base import Acceptance, HttpProvider, OutgoingMessage, ProviderRejected, ProviderUnavailable

logger = logging.getLogger("notiflow.providers")


@dataclass(frozen=True)
class Outcome:
    """What one request of one message came to."""

    acceptance: Acceptance | None = None  # answered: accepted, or that message refused
    fault: ProviderUnavailable | None = None  # not taken now (5xx, connection, timeout): tried again later
    refused_login: ProviderRejected | None = None  # the login is refused: nothing of the batch will go


def send_each(
    pool: ThreadPoolExecutor, batch: Sequence[OutgoingMessage], send_one: Callable[[OutgoingMessage], Outcome],
    *, start_within: float,
) -> list[Outcome | None]:
    """Each message's request, as many at once as the pool has threads; None for a message whose request
    never started: after a refused login or a fault that is not a timeout (the next requests would
    fail the same way), or later than `start_within` seconds (so a call stays within the hand-over
    deadline and its messages are never taken over while it runs)."""
    started = time.monotonic()
    stop = threading.Event()

    def one(message: OutgoingMessage) -> Outcome | None:
        if stop.is_set() or time.monotonic() - started > start_within:
            return None
        outcome = send_one(message)
        if outcome.refused_login or (outcome.fault and not outcome.fault.outcome_unknown):
            stop.set()
        return outcome

    return list(pool.map(one, batch))


def settle(name: str, batch: Sequence[OutgoingMessage], outcomes: Sequence[Outcome | None],
           answered_before: Sequence[Acceptance] = ()) -> list[Acceptance]:
    """A send call's answers from its messages' outcomes (send_each), with `answered_before` (messages refused
    before any request). A message with no outcome is left out, so the dispatcher reconciles it. A fault is
    raised with the answers given before it (the dispatcher records those and gives the rest back, held for
    the longest retry_after); a refused login refuses the messages it stopped, or is raised when nothing
    else was answered."""
    answered = list(answered_before) + [o.acceptance for o in outcomes if o is not None and o.acceptance is not None]
    login = next((o.refused_login for o in outcomes if o is not None and o.refused_login), None)
    faults = [o.fault for o in outcomes if o is not None and o.fault is not None]
    if login is not None:
        if not answered:
            raise login
        answered += [Acceptance(ref=m.ref, provider_message_id=None, error=str(login))
                     for m, o in zip(batch, outcomes) if o is not None and o.refused_login]
    if faults:
        waits = [f.retry_after for f in faults if f.retry_after is not None]
        raise ProviderUnavailable(str(faults[0]), retry_after=max(waits) if waits else None,
                                  outcome_unknown=any(f.outcome_unknown for f in faults), answered=answered)
    if not answered and batch:
        raise ProviderUnavailable(f"{name}: no request started in time")
    unanswered = sum(1 for o in outcomes if o is None)
    if unanswered:
        logger.warning("%s: %d of %d messages got no request in time; they are reconciled", name, unanswered, len(batch))
    return answered


class PooledHttpProvider(HttpProvider):
    """An HTTP provider that makes its own requests in flight (one message, status or lookup a request):
    their threads are opened with the instance and kept across batches like its client."""

    def __init__(self, name: str, base_url: str, *, requests_in_flight: int, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(name, base_url, timeout=timeout, transport=transport)
        self.requests_in_flight = requests_in_flight
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            super().open()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.requests_in_flight, thread_name_prefix=f"{self.kind}-{self.name}")

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            super().close()

    def _requests(self) -> ThreadPoolExecutor:
        """The threads requests are made from (the instance is opened first if it is not)."""
        if self._pool is None:
            self.open()
        assert self._pool is not None
        return self._pool


# A send call's requests start within this many seconds; later ones wait for the next call. With the
# per-request timeout this keeps one call well inside the hand-over deadline (20 s), after which another
# process may reconcile its messages.
START_WITHIN = 10.0


class PerMessageProvider(PooledHttpProvider):
    """A service that takes one message a request (the messengers, FCM): a batch is checked message by message
    (what the service would refuse anyway is refused before any request, with the reason), then the rest is
    sent `requests_in_flight` at a time. An adapter writes `_refusal` and `_send_one`."""

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        refused: list[Acceptance] = []
        sendable: list[OutgoingMessage] = []
        for message in batch:
            reason = self._refusal(message)
            if reason is None:
                sendable.append(message)
            else:
                refused.append(Acceptance(ref=message.ref, provider_message_id=None, error=reason))
        outcomes = send_each(self._requests(), sendable, self._send_one, start_within=START_WITHIN) if sendable else []
        return settle(self.name, sendable, outcomes, refused)

    def _refusal(self, message: OutgoingMessage) -> str | None:
        """Why `message` cannot be sent at all (the service would refuse it), or None. The base checks the text's length."""
        limit = self.capabilities.max_text_chars
        if limit is not None and len(message.text) > limit:
            return f"the text has {len(message.text):,} characters, more than the {limit:,} {self.kind} takes in one message"
        return None

    @abstractmethod
    def _send_one(self, message: OutgoingMessage) -> Outcome:
        """One message's request and what it came to."""


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or an empty one when it is not JSON or not an object (answers are read defensively)."""
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def as_mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty one (answers are read defensively)."""
    return value if isinstance(value, Mapping) else {}
