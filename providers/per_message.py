"""Services that take one message a request (Kannel's sendsms, many HTTP aggregators): a batch is sent
as that many requests, several at once, by the adapter itself (it declares in_flight=1 to the dispatcher)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from providers.base import Acceptance, HttpProvider, OutgoingMessage, ProviderRejected, ProviderUnavailable


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
