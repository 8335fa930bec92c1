"""How fast a provider is sent to: its requests per second, shared by every process, and its 429s.

Pacing uses a Prefect global concurrency limit per provider instance (`provider:NAME`, slots decaying
at the provider's messages per second), so every worker on every machine that sends to one account
draws from one bucket, and the Prefect UI's Concurrency page shows it. A request takes as many slots
as it carries messages; Prefect measured here pacing at 88–101% of nominal with 50 or more slots a
call (../shared/spec/delivery.md), which batches always are. Providers without a rate are not paced.

A 429 (or another answer with Retry-After) holds that provider alone, in this process, until the time
it named: the dispatcher claims nothing for it meanwhile, and other providers go on.
"""
from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import rate_limit
from prefect.exceptions import ObjectNotFound

from models.tables import utcnow
from providers.base import Provider

_lock = threading.Lock()
_held: dict[str, datetime] = {}
_limits: dict[str, tuple[int, float]] = {}


def limit_name(provider: Provider) -> str:
    return f"provider:{provider.name}"


def pace(provider: Provider, messages: int) -> None:
    """Wait until `messages` more may go to the provider at its rate (no wait for a provider without one)."""
    per_second = provider.capabilities.per_second
    if not per_second or messages <= 0:
        return
    _ensure_limit(provider, per_second)
    rate_limit(limit_name(provider), occupy=messages)


def _ensure_limit(provider: Provider, per_second: float) -> None:
    """The provider's limit exists with its rate; a bucket holds a second's worth or a whole request."""
    name = limit_name(provider)
    wanted = (max(math.ceil(per_second), provider.capabilities.batch_size), per_second)
    with _lock:
        if _limits.get(name) == wanted:
            return
        with get_client(sync_client=True) as client:
            try:
                current = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=wanted[0], slot_decay_per_second=wanted[1], active=True)
                )
            else:
                if (current.limit, current.slot_decay_per_second) != wanted:
                    client.update_global_concurrency_limit(
                        name, GlobalConcurrencyLimitUpdate(limit=wanted[0], slot_decay_per_second=wanted[1])
                    )
        _limits[name] = wanted


def throttle(name: str, seconds: float) -> None:
    """The provider asked us to wait `seconds` (Retry-After): hold it until then."""
    until = utcnow() + timedelta(seconds=max(seconds, 0.0))
    with _lock:
        if _held.get(name, until) <= until:
            _held[name] = until


def throttled_until(name: str) -> datetime | None:
    """When the provider may be sent to again, while it is held; None when it is not."""
    with _lock:
        until = _held.get(name)
        if until is not None and until <= utcnow():
            del _held[name]
            return None
        return until
