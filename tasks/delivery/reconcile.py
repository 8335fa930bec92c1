"""Reconcile messages in flight: handed to a provider with no answer recorded (the call timed out, or its
process was killed or cancelled mid-call). The provider is asked by our idempotency key what became of
each; a message is never resent blind, never given up while the provider may have it, and never taken
from a provider call that may still be running."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, select, update
from sqlmodel import Session

from models.db import in_transaction, session_scope
from models.history import record_each, transition
from models.settings import get_settings
from models.status import FINAL_STATUSES, Channel, MessageStatus, TaskState
from models.tables import Message, NotificationTask, utcnow
from providers.base import Acceptance, LookupUnsupported, Provider, ProviderError, Reports
from tasks.delivery.lease import holder_is_gone
from tasks.delivery.parts import record_parts
from providers.registry import provider_for

RECONCILE_CHUNK = 1000


@dataclass(frozen=True)
class Reconciled:
    sent: int = 0  # the provider had them: SENT with its id
    returned: int = 0  # it never got them: unsent again, to be sent with the same key
    closed: int = 0  # it never got them and they may not be sent: CANCELED (task cancelled) or ERROR (attempts spent)
    waiting: int = 0  # handed too recently by another process, or not yet surely lost: asked at `next_at`
    next_at: datetime | None = None
    error: str | None = None


def in_flight(task_id: int, channel: Channel) -> Any:
    """Messages handed to the channel's provider whose answer was never recorded."""
    return and_(
        Message.task_id == task_id, Message.channel == channel.value, Message.handed_at.is_not(None),
        Message.provider_message_id.is_(None), Message.status.not_in([s.value for s in FINAL_STATUSES]),
    )


def reconcile(task_id: int, channel: Channel, provider: Provider, owner: str | None = None) -> Reconciled:
    """Settle the channel's messages in flight that no running call can still answer: those handed by `owner`
    (this process, whose calls are over) and those handed longer ago than the hand-over deadline."""
    settings = get_settings()
    now = utcnow()
    deadline = timedelta(seconds=settings.handover_deadline_seconds)
    with session_scope() as session:
        uid, task_state = session.execute(
            select(NotificationTask.uid, NotificationTask.state).where(NotificationTask.id == task_id)
        ).one()
        rows = session.execute(
            select(Message.id, Message.handed_at, Message.handed_by, Message.attempts)
            .where(in_flight(task_id, channel)).order_by(Message.id).limit(RECONCILE_CHUNK)
        ).all()
    gone = {h for h in {r.handed_by for r in rows} if h != owner and holder_is_gone(h)}
    # Whose call is surely over: ours (this process calls one at a time), a dead process's, or any older
    # than the deadline. A live process's recent call may still answer: leave it alone.
    ready = [r for r in rows if r.handed_at <= now - deadline or r.handed_by in gone or (owner is not None and r.handed_by == owner)]
    later = [r for r in rows if r not in ready]
    if not ready:
        return _waiting(later, deadline)
    refs = {f"{uid}-{r.id}": r for r in ready}
    may_send = task_state != TaskState.CANCELLED
    # Every write below also asks that the message is still unanswered and was handed before this pass
    # began: one handed again meanwhile (by a retried run, or dispatch after a hand-back) is another call's.
    unanswered = and_(Message.provider_message_id.is_(None), Message.handed_at <= now)
    try:
        answers = provider.lookup(list(refs))
    except LookupUnsupported:
        # The provider can be asked only by sending again with the same key, which a cancelled task must not do.
        if may_send:
            _hand_back([r.id for r in ready], now)
            return Reconciled(returned=len(ready))
        stale = [r.id for r in ready if r.handed_at <= now - deadline]
        with session_scope() as session:
            closed = transition(
                session, and_(Message.id.in_(stale), unanswered), MessageStatus.ERROR,
                f"outcome unknown: cancelled during the call, and {provider.name} cannot be asked by reference",
                "reconcile",
            ) if stale else 0
        waiting = _waiting(later + [r for r in ready if r.id not in stale], deadline)
        return Reconciled(closed=closed, waiting=waiting.waiting, next_at=waiting.next_at)
    except ProviderError as exc:
        return Reconciled(waiting=len(rows), next_at=now + timedelta(seconds=5), error=str(exc))
    known = [a for a in answers if a.provider_message_id and a.ref in refs]
    sent, _ = record_acceptances(known, {ref: r.id for ref, r in refs.items()}, provider, "reconcile")
    unknown = [r for ref, r in refs.items() if ref not in {a.ref for a in known}]
    # Surely lost: handed before the deadline, and the provider still has not got it.
    lost = [r for r in unknown if r.handed_at <= now - deadline]
    fresh = [r for r in unknown if r.handed_at > now - deadline]
    spent = [r.id for r in lost if r.attempts >= settings.max_send_attempts]
    closed = 0
    with session_scope() as session:
        if not may_send and lost:
            closed += transition(
                session, and_(Message.id.in_([r.id for r in lost]), unanswered),
                MessageStatus.CANCELED, "cancelled by the user; it never reached the provider", "reconcile",
            )
        elif spent:
            closed += transition(
                session, and_(Message.id.in_(spent), unanswered), MessageStatus.ERROR,
                f"carrier fault after {settings.max_send_attempts} attempts; it never reached the provider", "reconcile",
            )
    retry = [r.id for r in lost if may_send and r.id not in spent] + [
        r.id for r in fresh if may_send and r.attempts < settings.max_send_attempts
    ]
    _hand_back(retry, now)
    held = later + [r for r in fresh if r.id not in retry]
    result = _waiting(held, deadline)
    return Reconciled(sent=sent, returned=len(retry), closed=closed, waiting=result.waiting, next_at=result.next_at)


@task(name="reconcile in flight", cache_policy=NO_CACHE)
def reconcile_channel(task_id: int, channel: Channel) -> Reconciled:
    """The reconcile step of a run that does not send (tracking after a cancel or a crash)."""
    return reconcile(task_id, channel, provider_for(channel))


def record_acceptances(
    acceptances: list[Acceptance], ids: dict[str, int], provider: Provider, source: str = "dispatch"
) -> tuple[int, int]:
    """Record the provider's answers: SENT with its id (first poll planned), or ERROR with its reason."""
    now = utcnow()
    # A provider that never reports leaves its messages SENT: there is nothing to wait for.
    first_poll = (None if provider.capabilities.reports is Reports.NONE
                  else now + timedelta(seconds=(get_settings().poll_schedule or provider.capabilities.poll_schedule)[0]))
    changes: list[dict[str, Any]] = []
    parts: dict[int, tuple[str, ...]] = {}
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
            if len(acceptance.part_ids) > 1:
                parts[message_id] = acceptance.part_ids
        else:
            refused += 1
            changes.append({
                "id": message_id, "status": MessageStatus.ERROR.value,
                "status_description": f"refused by {provider.name}: {acceptance.error}", "provider": provider.name,
            })
    def record(session: Session) -> None:
        record_each(session, changes, source)
        # With the message's own id, in one transaction: a receipt for any part finds its message.
        record_parts(session, provider.name, parts, now)

    in_transaction(record)
    return sent, refused


def _hand_back(message_ids: list[int], handed_before: datetime) -> None:
    """The provider surely has not got these: they are plainly unsent again (the next send uses the same key)."""
    if not message_ids:
        return
    with session_scope() as session:
        session.execute(
            update(Message)
            .where(Message.id.in_(message_ids), Message.provider_message_id.is_(None), Message.handed_at <= handed_before)
            .values(handed_at=None, handed_by=None)
        )


def _waiting(rows: list[Any], deadline: timedelta) -> Reconciled:
    if not rows:
        return Reconciled()
    return Reconciled(waiting=len(rows), next_at=min(r.handed_at for r in rows) + deadline)
