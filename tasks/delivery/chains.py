"""Fallback: a row's channels tried in order until one delivers (spec §4).

Intake stores one message per channel of a row's chain. In a cascade (send order `sequential`) every
channel after the first waits (`waits_for` set, status CREATED, not scheduled) until the ones before it
have failed: ended UNDELIVERED, ERROR, EXPIRED (or CANCELED, SKIPPED), or were accepted but still have
no final status when their own sending lifetime (validity period) ends — "accepted" is not delivered.
Then the next channel is released and scheduled like any new message. Once a channel delivers, the
chain's channels not yet handed to a provider become SKIPPED. A `required` channel, and every channel
of a `parallel` row, is never held and never skipped.

Each pass is a few UPDATEs whose conditions look at the row's other messages, so two processes (a
run and a webhook's late report) agree without reading first, and a re-run repeats nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, exists, func, not_, or_, select, update
from sqlalchemy.orm import aliased

from models.db import session_scope
from models.history import transition
from models.status import ACCEPTED_STATUSES, DELIVERED_STATUSES, UNSENT_STATUSES, MessageStatus
from models.tables import Message, utcnow

# A channel that ended like this has failed: the next one of its cascade is tried.
FAILED_STATUSES = frozenset({MessageStatus.UNDELIVERED, MessageStatus.ERROR, MessageStatus.EXPIRED,
                             MessageStatus.CANCELED, MessageStatus.SKIPPED})
# Accepted by a provider with no final status yet: failed too once its sending lifetime is over.
_ACCEPTED = [s.value for s in ACCEPTED_STATUSES]
_UNSENT = [s.value for s in UNSENT_STATUSES]


@dataclass(frozen=True)
class ChainsAdvanced:
    released: int = 0  # channels whose turn came: to be scheduled
    skipped: int = 0  # channels no longer needed: another of their chain delivered
    # When a channel now accepted but silent reaches the end of its lifetime, so its chain moves on.
    next_deadline: datetime | None = None


@task(name="advance fallback chains", cache_policy=NO_CACHE)
def advance_chains(task_id: int, now: datetime | None = None) -> ChainsAdvanced:
    """Skip what a delivery made unnecessary and release each cascade's next channel where the ones before failed."""
    now = now or utcnow()
    other = aliased(Message)
    same_row = and_(other.task_id == Message.task_id, other.row == Message.row, other.id != Message.id)
    with session_scope() as session:
        if session.execute(select(Message.id).where(Message.task_id == task_id, Message.waits_for.is_not(None),
                                                    Message.status.in_(_UNSENT)).limit(1)).first() is None:
            return ChainsAdvanced()  # most tasks: no row with a channel still waiting
        skipped = transition(
            session,
            and_(
                Message.task_id == task_id, Message.send_order == "sequential", Message.required.is_(False),
                Message.status.in_(_UNSENT), Message.handed_at.is_(None), Message.provider_message_id.is_(None),
                exists().where(same_row, other.status.in_([s.value for s in DELIVERED_STATUSES])),
            ),
            MessageStatus.SKIPPED, "skipped: another channel of its chain delivered", "fallback",
        )
        failed = or_(other.status.in_([s.value for s in FAILED_STATUSES]),
                     and_(other.status.in_(_ACCEPTED), other.expires_at <= now))
        first_waiting = (
            select(func.min(other.step))
            .where(other.task_id == Message.task_id, other.row == Message.row, other.waits_for.is_not(None),
                   other.status == MessageStatus.CREATED.value)
            .scalar_subquery()
        )
        released = session.execute(
            update(Message)
            .where(
                Message.task_id == task_id, Message.waits_for.is_not(None), Message.status == MessageStatus.CREATED.value,
                Message.step == first_waiting,
                # Every channel tried so far in the cascade failed (none still queued, in flight or delivered).
                not_(exists().where(same_row, other.waits_for.is_(None), other.required.is_(False), not_(failed))),
            )
            .values(waits_for=None, status_description="created, not sent (fallback: the channels before it failed)")
            .execution_options(synchronize_session=False)
        ).rowcount
        still_waiting = exists().where(same_row, other.waits_for.is_not(None), other.status == MessageStatus.CREATED.value)
        next_deadline = session.scalar(
            select(func.min(Message.expires_at)).where(
                Message.task_id == task_id, Message.send_order == "sequential", Message.waits_for.is_(None),
                Message.required.is_(False), Message.status.in_(_ACCEPTED), Message.expires_at > now, still_waiting,
            )
        )
    return ChainsAdvanced(released=released or 0, skipped=skipped, next_deadline=next_deadline)
