"""Dispatch: hand one batch of due messages to the channel's provider, exactly once.

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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, func, select, update

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

    @property
    def due_now(self) -> bool:
        return not self.paused and self.remaining > 0 and (self.next_due_at is None or self.next_due_at <= utcnow())

    @property
    def requested(self) -> bool:
        """A send request went to the provider (answered or not)."""
        return bool(self.sent or self.refused or self.carrier_fault)


@task(name="dispatch batch", cache_policy=NO_CACHE)
def dispatch(task_id: int, owner: str, channel: Channel) -> DispatchResult:
    """Send the next batch of due messages of one channel; report what is left on it and when it is due."""
    settings = get_settings()
    provider = provider_for(channel)
    with session_scope() as session:
        # A process that lost the lease stops here, before it touches a message.
        renew_lease(session, task_id, owner)
    # Messages of an earlier call that never answered come first: asked by their key, never resent blind.
    settled = reconcile(task_id, channel, provider, owner)
    now = utcnow()
    held_until = throttled_until(provider.name)
    with session_scope() as session:
        task_state = lock_task(session, task_id)
        renew_lease(session, task_id, owner)
        stopped = task_state in (TaskState.PAUSED, TaskState.CANCELLED)
        if not stopped:
            # While the provider asked us to slow down (429), nothing is claimed: expiry and windows still move.
            requests = 0 if held_until else provider.capabilities.in_flight
            batch, expired, uid = _claim(session, task_id, owner, channel, provider, now, requests)
    per_request = min(settings.dispatch_batch_size, provider.capabilities.batch_size)
    if stopped:
        # Paused (by a user, or by the error threshold) or cancelled from outside while this process
        # was between batches: send nothing, and say paused, so the flow suspends instead of
        # finishing, or waiting into a send.
        paused = task_state == TaskState.PAUSED
        return DispatchResult(
            channel=channel.value, sent=settled.sent, refused=0, expired=0,
            remaining=_what_is_left(task_id, channel)[0] if paused else 0, next_due_at=None, paused=paused,
        )
    sent = refused = 0
    fault: ProviderUnavailable | None = None
    # Up to `in_flight` requests at once, each a batch of the provider's size; answers recorded in this
    # thread as they come (each batch's outcome committed right after its call, as one call alone was).
    chunks = [batch[i : i + per_request] for i in range(0, len(batch), per_request)]
    if chunks:
        pool = _senders(provider)
        calls = {pool.submit(_send, provider, uid, channel, chunk): chunk for chunk in chunks}
        for call in as_completed(calls):
            chunk = calls[call]
            ids = {f"{uid}-{m.id}": m.id for m in chunk}
            try:
                acceptances = call.result()
            except ProviderUnavailable as exc:
                # A throttle (429) is reported only when nothing else failed: any other fault is the one the
                # flow backs off for and counts toward suspending the campaign.
                fault = exc if fault is None or not exc.retry_after else fault
                if exc.retry_after:
                    throttle(provider.name, exc.retry_after)
                # What the provider answered before the fault (an SMPP window cut short) is recorded; the rest goes back.
                answered = {a.ref for a in exc.answered}
                if answered:
                    chunk_sent, chunk_refused = record_acceptances(list(exc.answered), ids, provider)
                    sent += chunk_sent
                    refused += chunk_refused
                _give_back([m for m in chunk if f"{uid}-{m.id}" not in answered], exc, settings.max_send_attempts)
            except ProviderRejected as exc:
                refused += _refuse_all(chunk, provider, str(exc))
            else:
                chunk_sent, chunk_refused = record_acceptances(acceptances, ids, provider)
                sent += chunk_sent
                refused += chunk_refused
    elif settled.error:
        fault = ProviderUnavailable(settled.error)
    sent += settled.sent
    expired += settled.closed
    remaining, next_due = _what_is_left(task_id, channel)
    held_until = throttled_until(provider.name)
    if held_until and remaining:
        next_due = held_until if next_due is None else max(next_due, held_until)
    return DispatchResult(
        channel=channel.value,
        sent=sent,
        refused=refused,
        expired=expired,
        remaining=remaining,
        next_due_at=next_due,
        carrier_fault=str(fault) if fault else None,
        retry_after=fault.retry_after if fault else None,
    )


def _claim(
    session: Any, task_id: int, owner: str, channel: Channel, provider: Provider, now: datetime, requests: int
) -> tuple[list[Any], int, str]:
    """Under the task's lock: expire what is past its validity, queue what is due, and mark the next
    `requests` batches handed to `owner`, high priority first; returns them, how many expired, and the
    task's uid (the key's prefix)."""
    settings = get_settings()
    uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
    unsent = and_(
        Message.task_id == task_id, Message.channel == channel.value,
        Message.provider_message_id.is_(None), Message.handed_at.is_(None),
    )
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
    if not requests:
        return [], expired, uid
    claim = (
        select(Message.id, Message.recipient, Message.text, Message.sender, Message.attempts, Message.encoding, Message.parts,
               Message.params)
        .where(unsent, Message.status == MessageStatus.QUEUED.value)
        .order_by(Message.priority, Message.id)
        .limit(min(settings.dispatch_batch_size, provider.capabilities.batch_size) * requests)
    )
    if session.get_bind().dialect.name == "postgresql":
        claim = claim.with_for_update(skip_locked=True)
    batch = session.execute(claim).all()
    if batch:
        session.execute(
            update(Message)
            .where(Message.id.in_([m.id for m in batch]))
            .values(handed_at=now, handed_by=owner, provider=provider.name, attempts=Message.attempts + 1)
        )
    return batch, expired, uid


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
        spent = [m.id for m in batch if m.attempts + 1 >= max_attempts]
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
