"""Poll status: ask the provider about sent messages on a growing schedule, last 24 h after sending."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, func, select, update
from sqlmodel import Session

from models.db import in_transaction, session_scope
from models.history import record_each, transition
from models.settings import get_settings
from models.status import ACCEPTED_STATUSES, FINAL_STATUSES, MessageStatus
from models.tables import Message, utcnow
from providers.base import ProviderError, StatusReport
from providers.registry import provider_named
from tasks.delivery.parts import resolve_partly_reported
from tasks.delivery.track import apply_reports

POLL_CHUNK = 1000
# The engine may wake a run up to ~0.5 s early; a poll due this soon is asked now rather than rescheduled.
DUE_SLACK = timedelta(seconds=2)


@dataclass(frozen=True)
class PollResult:
    updated: int
    outstanding: int
    next_poll_at: datetime | None
    error: str | None = None


@task(name="poll status", cache_policy=NO_CACHE)
def poll(task_id: int, provider_name: str) -> PollResult:
    """Ask one provider about every message of the task it carries whose poll is due; messages past their
    last poll end UNDELIVERED. A provider that cannot be asked (reports pushed only) is not asked: its
    messages' polls only count the time to that last one."""
    provider = provider_named(provider_name)
    schedule = get_settings().poll_schedule or list(provider.capabilities.poll_schedule)
    not_final = and_(
        Message.task_id == task_id,
        Message.provider == provider_name,
        Message.provider_message_id.is_not(None),
        Message.status.not_in([s.value for s in FINAL_STATUSES]),
    )
    updated, error = 0, None
    last_id = 0
    while True:
        now = utcnow()
        with session_scope() as session:
            due = session.execute(
                select(Message.id, Message.provider_message_id, Message.sent_at, Message.poll_count, Message.expires_at)
                .where(not_final, Message.next_poll_at <= now + DUE_SLACK, Message.id > last_id)
                .order_by(Message.id)
                .limit(POLL_CHUNK)
            ).all()
        if not due:
            break
        last_id = due[-1].id
        try:
            reports = provider.poll([m.provider_message_id for m in due]) if provider.capabilities.polled else []
        except ProviderError as exc:
            error = str(exc)
            break
        def apply(session: Session, due: list[Any] = due, reports: list[StatusReport] = reports) -> int:
            changed = apply_reports(session, provider.name, reports, "poll")
            changed += resolve_partly_reported(session, provider.name, [m.id for m in due], now)
            _plan_next_polls(session, due, schedule, now)
            return changed

        updated += in_transaction(apply)
    if error is None:
        with session_scope() as session:
            # Spec §1: a message not delivered within its sending lifetime becomes EXPIRED (a late report
            # changes nothing then); its chain, if it has one, falls back.
            updated += transition(
                session, and_(not_final, Message.status.in_([s.value for s in ACCEPTED_STATUSES]), Message.expires_at <= utcnow()),
                MessageStatus.EXPIRED, "not delivered within its sending lifetime (validity period)", "poll", next_poll_at=None,
            )
    with session_scope() as session:
        outstanding, next_poll = session.execute(
            select(func.count(), func.min(Message.next_poll_at)).where(not_final)
        ).one()
    return PollResult(updated=updated, outstanding=outstanding or 0, next_poll_at=next_poll, error=error)


def _plan_next_polls(session: Any, polled: list[Any], schedule: list[float], now: datetime) -> None:
    """Set each still-open message's next poll; one past its last poll gets a final status."""
    still_open = {
        row.id
        for row in session.execute(
            select(Message.id).where(
                Message.id.in_([m.id for m in polled]),
                Message.status.not_in([s.value for s in FINAL_STATUSES]),
            )
        )
    }
    given_up: list[dict[str, Any]] = []
    next_polls: list[dict[str, Any]] = []
    for message in polled:
        if message.id not in still_open:
            continue
        count = message.poll_count + 1
        if count >= len(schedule):
            given_up.append({
                "id": message.id, "status": MessageStatus.UNDELIVERED.value, "next_poll_at": None,
                "poll_count": count,
                "status_description": f"no delivery report {timedelta(seconds=schedule[-1])} after sending",
            })
            continue
        next_at = message.sent_at + timedelta(seconds=schedule[count])
        if message.expires_at is not None and message.expires_at < next_at:
            next_at = message.expires_at  # asked once more as its sending lifetime ends, then EXPIRED
        next_at = max(next_at, now + timedelta(seconds=1))
        next_polls.append({"id": message.id, "poll_count": count, "next_poll_at": next_at})
    if next_polls:
        session.execute(update(Message), next_polls)
    record_each(session, given_up, "poll")


def providers_to_poll(task_id: int) -> list[str]:
    """The provider instances carrying the task's messages that await a final status."""
    with session_scope() as session:
        return sorted(session.scalars(
            select(Message.provider).where(Message.task_id == task_id, Message.next_poll_at.is_not(None)).distinct()
        ))
