"""Dispatch: hand one batch of due messages to the channel's provider, exactly once.

Each message is marked as handed (attempt, run, time) and committed before the provider call, and
its outcome is committed right after. A message left handed without a provider id (the process was
killed mid-call, or the call timed out) is sent again with the same idempotency key, which the
provider answers with the id it already gave: it is reconciled, never sent twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, func, select, update

from models.db import session_scope
from models.history import record_each, transition
from models.settings import get_settings
from models.status import Channel, MessageStatus, TaskState
from models.tables import Message, NotificationTask, utcnow
from providers.base import (
    Acceptance,
    OutgoingMessage,
    Provider,
    ProviderRejected,
    ProviderUnavailable,
)
from tasks.lease import renew_lease
from tasks.routing import provider_for
from tasks.schedule import reschedule_closed


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

    @property
    def due_now(self) -> bool:
        return self.remaining > 0 and (self.next_due_at is None or self.next_due_at <= utcnow())


@task(name="dispatch batch", cache_policy=NO_CACHE)
def dispatch(task_id: int, owner: str, channel: Channel) -> DispatchResult:
    """Send the next batch of due messages of one channel; report what is left on it and when it is due."""
    settings = get_settings()
    provider = provider_for(channel)
    with provider:
        now = utcnow()
        with session_scope() as session:
            renew_lease(session, task_id, owner)
            uid, task_state = session.execute(
                select(NotificationTask.uid, NotificationTask.state).where(NotificationTask.id == task_id)
            ).one()
            if task_state in (TaskState.PAUSED, TaskState.CANCELLED):
                # Paused or cancelled from outside while this process was between batches: send nothing.
                return DispatchResult(channel=channel.value, sent=0, refused=0, expired=0, remaining=0, next_due_at=None)
            unsent = and_(Message.task_id == task_id, Message.channel == channel.value, Message.provider_message_id.is_(None))
            expired = transition(
                session,
                and_(unsent, Message.status.in_([MessageStatus.QUEUED.value, MessageStatus.DELAYED.value]),
                     Message.handed_at.is_(None), Message.expires_at <= now),
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
            claim = (
                select(Message.id, Message.recipient, Message.text, Message.sender, Message.attempts)
                .where(unsent, Message.status == MessageStatus.QUEUED.value)
                .order_by(Message.id)
                .limit(min(settings.dispatch_batch_size, provider.batch_size))
            )
            if session.get_bind().dialect.name == "postgresql":
                claim = claim.with_for_update(skip_locked=True)
            batch = session.execute(claim).all()
            if batch:
                session.execute(
                    update(Message)
                    .where(Message.id.in_([m.id for m in batch]))
                    .values(handed_at=now, handed_by=owner, attempts=Message.attempts + 1)
                )
        sent = refused = 0
        fault: ProviderUnavailable | None = None
        if batch:
            outgoing = {
                f"{uid}-{m.id}": OutgoingMessage(
                    ref=f"{uid}-{m.id}", recipient=m.recipient, text=m.text, sender=m.sender, channel=channel
                )
                for m in batch
            }
            ids = {f"{uid}-{m.id}": m.id for m in batch}
            try:
                acceptances = provider.send(list(outgoing.values()))
            except ProviderUnavailable as exc:
                fault = exc
                _give_back(batch, exc, settings.max_send_attempts)
            except ProviderRejected as exc:
                refused = _refuse_all(batch, provider, str(exc))
            else:
                sent, refused = _record_acceptances(acceptances, ids, provider)
        remaining, next_due = _what_is_left(task_id, channel)
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


def _record_acceptances(acceptances: list[Acceptance], ids: dict[str, int], provider: Provider) -> tuple[int, int]:
    now = utcnow()
    first_poll = now + timedelta(seconds=(get_settings().poll_schedule or provider.poll_schedule)[0])
    changes: list[dict[str, Any]] = []
    sent = refused = 0
    for acceptance in acceptances:
        message_id = ids.get(acceptance.ref)
        if message_id is None:
            continue
        if acceptance.provider_message_id:
            sent += 1
            changes.append({
                "id": message_id, "status": MessageStatus.SENT.value,
                "status_description": "accepted by the provider" + (" (reconciled)" if acceptance.duplicate else ""),
                "provider": provider.name, "provider_message_id": acceptance.provider_message_id,
                "sent_at": now, "next_poll_at": first_poll, "poll_count": 0,
            })
        else:
            refused += 1
            changes.append({
                "id": message_id, "status": MessageStatus.ERROR.value,
                "status_description": f"refused by {provider.name}: {acceptance.error}", "provider": provider.name,
            })
    with session_scope() as session:
        record_each(session, changes, "dispatch")
    return sent, refused


def _give_back(batch: list[Any], fault: ProviderUnavailable, max_attempts: int) -> None:
    """After a failed call: retry later, or give up on messages that used up their attempts."""
    with session_scope() as session:
        spent = [m.id for m in batch if m.attempts + 1 >= max_attempts]
        if spent:
            transition(
                session, Message.id.in_(spent), MessageStatus.ERROR,
                f"carrier fault after {max_attempts} attempts: {fault}", "dispatch",
            )
        if not fault.outcome_unknown:
            # The provider certainly did not take the batch: the messages are plainly unsent again.
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
    with session_scope() as session:
        remaining, next_due = session.execute(
            select(func.count(), func.min(Message.scheduled_at)).where(
                Message.task_id == task_id,
                Message.channel == channel.value,
                Message.provider_message_id.is_(None),
                Message.status.in_([MessageStatus.QUEUED.value, MessageStatus.DELAYED.value]),
            )
        ).one()
    return remaining or 0, next_due
