"""Dispatch: hand a channel's due messages to its provider, exactly once, with its requests in flight all the time.

Each message is marked as handed (attempt, run, time) and committed before the provider call, and
its outcome is committed right after. A message left handed without a provider id (the process was
killed mid-call, or the call timed out) is never picked by a plain send again: it is reconciled by
its idempotency key (tasks/delivery/reconcile.py), by this process at once when the call was its own, by any
other only once the hand-over deadline says no call can still be running.

A paused task sends nothing and says so (`paused`), whoever paused it and whenever: the flow then
suspends its run instead of finishing or waiting into a send.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, func, or_, select, update

from models.db import session_scope
from models.history import transition
from models.settings import get_settings
from models.status import SCHEDULED_STATUSES, Channel, MessageStatus, TaskState
from models.tables import Message, NotificationTask, utcnow
from providers.base import (
    Acceptance,
    OutgoingMessage,
    Provider,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import provider_for
from tasks.delivery.lease import lock_task, renew_lease
from tasks.delivery.pacing import pace, throttle, throttled_until
from tasks.delivery.reconcile import in_flight, reconcile, record_acceptances
from tasks.schedule.schedule import reschedule_closed


@dataclass(frozen=True)
class DispatchResult:
    channel: str
    sent: int
    refused: int
    expired: int
    remaining: int
    next_due_at: datetime | None
    carrier_fault: str | None = None
    retry_after: float | None = None
    # The task is paused: nothing was sent and nothing will be until someone resumes it.
    paused: bool = False
    # Send requests made (answered or not), and how many of them failed (a fault or a throttle).
    requests: int = 0
    failed_requests: int = 0

    @property
    def due_now(self) -> bool:
        return not self.paused and self.remaining > 0 and (self.next_due_at is None or self.next_due_at <= utcnow())


@dataclass
class _Tally:
    sent: int = 0
    refused: int = 0
    requests: int = 0
    failed: int = 0
    fault: ProviderUnavailable | None = None
    stopped_by: str | None = None  # the task's state when a claim found it paused or cancelled


@task(name="dispatch", cache_policy=NO_CACHE)
def dispatch(task_id: int, owner: str, channel: Channel) -> DispatchResult:
    """Send one channel's due messages for up to `dispatch_span_seconds`, with the provider's requests in flight
    all the time; report what is left on the channel and when it is due."""
    settings = get_settings()
    provider = provider_for(channel)
    with session_scope() as session:
        # A process that lost the lease stops here, before it touches a message.
        renew_lease(session, task_id, owner)
    # Messages of an earlier call that never answered come first: asked by their key, never resent blind.
    settled = reconcile(task_id, channel, provider, owner)
    with session_scope() as session:
        renew_lease(session, task_id, owner)
        task_state = lock_task(session, task_id)
        stopped = task_state in (TaskState.PAUSED, TaskState.CANCELLED)
        if not stopped:
            thorough = time.monotonic() - _swept.get((task_id, channel), -_SWEEP_SECONDS) >= _SWEEP_SECONDS
            expired, uid = _make_due(session, task_id, channel, utcnow(), thorough)
    if stopped:
        # Paused (by a user, or by the error threshold) or cancelled from outside while this process
        # was between batches: send nothing, and say paused, so the flow suspends instead of
        # finishing, or waiting into a send.
        paused = task_state == TaskState.PAUSED
        return DispatchResult(
            channel=channel.value, sent=settled.sent, refused=0, expired=0,
            remaining=_what_is_left(task_id, channel)[0] if paused else 0, next_due_at=None, paused=paused,
        )
    tally = _Tally()
    if throttled_until(provider.name) is None:
        _send_due(task_id, owner, channel, provider, uid, tally, time.monotonic() + settings.dispatch_span_seconds)
    if not tally.requests and not thorough and tally.stopped_by is None:
        # Nothing was claimable: what is left may be past its window or validity, which only the sweep tells.
        with session_scope() as session:
            lock_task(session, task_id)
            expired += _make_due(session, task_id, channel, utcnow(), thorough=True)[0]
    fault = tally.fault
    if fault is None and not tally.requests and settled.error:
        fault = ProviderUnavailable(settled.error)
    remaining, next_due = _what_is_left(task_id, channel)
    held_until = throttled_until(provider.name)
    if held_until and remaining:
        next_due = held_until if next_due is None else max(next_due, held_until)
    return DispatchResult(
        channel=channel.value,
        sent=tally.sent + settled.sent,
        refused=tally.refused,
        expired=expired + settled.closed,
        remaining=remaining,
        next_due_at=next_due,
        carrier_fault=str(fault) if fault else None,
        retry_after=fault.retry_after if fault else None,
        paused=tally.stopped_by == TaskState.PAUSED,
        requests=tally.requests,
        failed_requests=tally.failed,
    )


# When each task and channel was last swept for messages past their validity or window, in this process.
_swept: dict[tuple[int, Channel], float] = {}
_SWEEP_SECONDS = 30.0


def _make_due(session: Any, task_id: int, channel: Channel, now: datetime, thorough: bool) -> tuple[int, str]:
    """Under the task's lock: queue what is due, and (`thorough`) expire what is past its validity and reschedule
    what missed its window; returns how many expired and the task's uid (the messages' key prefix).

    The sweep reads every unsent message of the task (a second for a million on PostgreSQL), so a span does it
    at most every _SWEEP_SECONDS, or when nothing was claimable: claims never take a message past its
    validity or window in any case (_claim), the sweep only gives such messages their status sooner."""
    uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    unsent = and_(
        Message.task_id == task_id, Message.channel == channel.value,
        Message.provider_message_id.is_(None), Message.handed_at.is_(None),
    )
    expired = 0
    if thorough:
        _swept[(task_id, channel)] = time.monotonic()
        expired = transition(
            session,
            and_(unsent, Message.status.in_([s.value for s in SCHEDULED_STATUSES]),
                 Message.expires_at <= now),
            MessageStatus.EXPIRED,
            "validity period passed before the message could be sent",
            "dispatch",
        )
        # A window that closed while the message waited (a pause, carrier faults, a late wake-up).
        expired += reschedule_closed(session, task_id, now)
    transition(
        session,
        and_(unsent, Message.status == MessageStatus.DELAYED.value, Message.scheduled_at <= now),
        MessageStatus.QUEUED,
        "waiting in queue",
        "dispatch",
    )
    return expired, uid


def _send_due(
    task_id: int, owner: str, channel: Channel, provider: Provider, uid: str, tally: _Tally, until: float
) -> None:
    """Keep the provider's `in_flight` requests going until nothing is due, the span ends, the task is paused or
    cancelled, or the provider faults or throttles: each answer is recorded as it comes, and a new batch is
    claimed in its place, so the provider never waits for the slowest request of a round."""
    settings = get_settings()
    per_request = min(settings.dispatch_batch_size, provider.capabilities.batch_size)
    pool = _senders(provider)
    running: dict[Future[list[Acceptance]], list[Any]] = {}
    claiming = True
    renewed = time.monotonic()  # dispatch() renewed the lease just before
    while True:
        while claiming and len(running) < provider.capabilities.in_flight:
            # A span ends only after one request at least, so every call moves the task on, however short its span.
            over = time.monotonic() >= until and (tally.requests or running)
            if over or tally.fault is not None or throttled_until(provider.name):
                claiming = False
                break
            # The lease lasts lease_seconds: renewing it every second is as safe as at every claim, and cheaper.
            renew = time.monotonic() - renewed >= 1.0
            chunk, state = _claim(task_id, owner, channel, provider, per_request, renew)
            renewed = time.monotonic() if renew else renewed
            if state in (TaskState.PAUSED, TaskState.CANCELLED):
                tally.stopped_by = state
            if not chunk:
                claiming = False
                break
            running[pool.submit(_send, provider, uid, channel, chunk)] = chunk
        if not running:
            return
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for call in done:
            _record(call, running.pop(call), provider, uid, tally, settings.max_send_attempts)


def _record(
    call: Future[list[Acceptance]], chunk: list[Any], provider: Provider, uid: str, tally: _Tally, max_attempts: int
) -> None:
    """Commit one request's outcome right after its answer."""
    tally.requests += 1
    ids = {f"{uid}-{m.id}": m.id for m in chunk}
    try:
        acceptances = call.result()
    except ProviderUnavailable as exc:
        tally.failed += 1
        # A throttle (429) is reported only when nothing else failed: any other fault is the one the
        # flow backs off for and counts toward suspending the campaign.
        tally.fault = exc if tally.fault is None or not exc.retry_after else tally.fault
        if exc.retry_after:
            throttle(provider.name, exc.retry_after)
        # What the provider answered before the fault (an SMPP window cut short) is recorded; the rest goes back.
        answered = {a.ref for a in exc.answered}
        if answered:
            sent, refused = record_acceptances(list(exc.answered), ids, provider)
            tally.sent += sent
            tally.refused += refused
        _give_back([m for m in chunk if f"{uid}-{m.id}" not in answered], exc, max_attempts)
    except ProviderRejected as exc:
        tally.refused += _refuse_all(chunk, provider, str(exc))
    else:
        sent, refused = record_acceptances(acceptances, ids, provider)
        tally.sent += sent
        tally.refused += refused


def _claim(
    task_id: int, owner: str, channel: Channel, provider: Provider, size: int, renew: bool
) -> tuple[list[Any], str | None]:
    """Mark the next `size` queued messages of the channel handed to `owner`, high priority first, in one
    statement under the task's lock; returns them (none when the task is paused or cancelled) and the task's state.

    A message whose window closed or whose validity ran out since the span began is left for the next span's
    _make_due, never sent late."""
    now = utcnow()
    with session_scope() as session:
        if renew:
            renew_lease(session, task_id, owner)
        state = lock_task(session, task_id)
        if state in (TaskState.PAUSED, TaskState.CANCELLED):
            return [], state
        picked = (
            select(Message.id)
            .where(
                Message.task_id == task_id, Message.channel == channel.value, Message.status == MessageStatus.QUEUED.value,
                Message.provider_message_id.is_(None), Message.handed_at.is_(None),
                or_(Message.expires_at.is_(None), Message.expires_at > now),
                or_(Message.window_ends_at.is_(None), Message.window_ends_at > now),
            )
            .order_by(Message.priority, Message.id)
            .limit(size)
        )
        if session.get_bind().dialect.name == "postgresql":
            picked = picked.with_for_update(skip_locked=True)
        batch = session.execute(
            update(Message)
            .where(Message.id.in_(picked.scalar_subquery()))
            .values(handed_at=now, handed_by=owner, provider=provider.name, attempts=Message.attempts + 1)
            .returning(Message.id, Message.recipient, Message.text, Message.sender, Message.attempts, Message.encoding,
                       Message.parts, Message.params, Message.priority)
            .execution_options(synchronize_session=False)
        ).all()
    # RETURNING keeps no order: the provider gets them in priority order all the same.
    return sorted(batch, key=lambda m: (m.priority, m.id)), state


_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _senders(provider: Provider) -> ThreadPoolExecutor:
    """The threads that make the provider's requests in flight, kept for the process like the provider itself."""
    key = (provider.name, provider.capabilities.in_flight)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix=f"send-{provider.name}")
        return pool


def _send(provider: Provider, uid: str, channel: Channel, chunk: list[Any]) -> list[Acceptance]:
    """One request: paced to the provider's rate (shared by every process that sends to it), then sent."""
    pace(provider, len(chunk))
    return provider.send([
        OutgoingMessage(ref=f"{uid}-{m.id}", recipient=m.recipient, text=m.text, sender=m.sender, channel=channel,
                        encoding=m.encoding, parts=m.parts, params=m.params or {})
        for m in chunk
    ])


def _give_back(batch: list[Any], fault: ProviderUnavailable, max_attempts: int) -> None:
    """After a failed call: a batch the provider surely did not take is unsent again (or ERROR once its
    attempts are spent); one it may have taken (a timeout) stays handed, to be reconciled by its key —
    never ERROR, since the provider may have accepted and billed it. A throttled request (429) spends
    no attempt: the provider refused to look at it."""
    if fault.outcome_unknown:
        return
    if fault.retry_after is not None:
        with session_scope() as session:
            session.execute(
                update(Message).where(Message.id.in_([m.id for m in batch]))
                .values(handed_at=None, handed_by=None, attempts=Message.attempts - 1)
            )
        return
    with session_scope() as session:
        spent = [m.id for m in batch if m.attempts >= max_attempts]  # attempts as claimed, this one counted
        if spent:
            transition(
                session, Message.id.in_(spent), MessageStatus.ERROR,
                f"carrier fault after {max_attempts} attempts: {fault}", "dispatch",
            )
        session.execute(
            update(Message)
            .where(Message.id.in_([m.id for m in batch if m.id not in spent]))
            .values(handed_at=None, handed_by=None)
        )


def _refuse_all(batch: list[Any], provider: Provider, reason: str) -> int:
    with session_scope() as session:
        return transition(
            session, Message.id.in_([m.id for m in batch]), MessageStatus.ERROR,
            f"refused by {provider.name}: {reason}", "dispatch", provider=provider.name,
        )


def _what_is_left(task_id: int, channel: Channel) -> tuple[int, datetime | None]:
    """Messages still to send (and in flight, to reconcile) on the channel, and when the next is due."""
    deadline = timedelta(seconds=get_settings().handover_deadline_seconds)
    with session_scope() as session:
        to_send, next_due = session.execute(
            select(func.count(), func.min(Message.scheduled_at)).where(
                Message.task_id == task_id,
                Message.channel == channel.value,
                Message.provider_message_id.is_(None),
                Message.handed_at.is_(None),
                Message.status.in_([s.value for s in SCHEDULED_STATUSES]),
            )
        ).one()
        handed, oldest = session.execute(
            select(func.count(), func.min(Message.handed_at)).where(in_flight(task_id, channel))
        ).one()
    due = [t for t in (next_due, oldest + deadline if oldest else None) if t is not None]
    return (to_send or 0) + (handed or 0), min(due, default=None)
