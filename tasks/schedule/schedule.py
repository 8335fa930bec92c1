"""Schedule per window: give every message its send time, window end and expiry in the subscriber's local time.

The rules (README, "Scheduling"):
- earliest send time = the latest of now, `send at`, `start date` + `start time` (validation resolves
  these to `not_before`, a time without an offset being the account's);
- windows = the row's `allowed time ranges`, else the task's time limiter, else the template's
  sending windows, else 09:00–20:00, in the subscriber's local time (every candidate zone of the
  number with strict local time);
- scheduled_at = the first instant at or after the earliest send time inside a window;
  expires_at = scheduled_at + validity period; window_ends_at = when that window closes;
- a message not handed to a provider before its window closes waits for the next window, or
  becomes EXPIRED if its validity period ends first.
Messages are moved in groups that share every input, so a million rows are a handful of UPDATEs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import ColumnElement, and_, select
from sqlmodel import Session

from models.db import session_scope
from models.errors import NoWindow
from models.history import transition
from models.settings import get_settings
from models.status import SCHEDULED_STATUSES, MessageStatus
from models.tables import Message, NotificationTask, Template, utcnow
from tasks.schedule.windows import DEFAULT_WINDOWS, Slot, Window, next_slot, parse_windows

_GROUP = (Message.time_zone, Message.time_zones, Message.windows, Message.template_id, Message.not_before)


@dataclass
class ScheduleResult:
    """How many messages a scheduling pass queued, delayed and expired (counted as the pass goes)."""

    queued: int = 0
    delayed: int = 0
    expired: int = 0


@dataclass(frozen=True)
class Planner:
    """Where a message's windows come from, and in which zones they must hold."""

    limiter: tuple[str, ...]
    template_windows: Mapping[int, Sequence[str]]
    strict: bool = False

    def windows(self, own: str | None, template_id: int | None) -> list[Window]:
        """The row's windows, else the task's time limiter, else the template's, else 09:00–20:00."""
        if own:
            return parse_windows(own.split())
        if self.limiter:
            return parse_windows(self.limiter)
        if template_id is not None and self.template_windows.get(template_id):
            return parse_windows(self.template_windows[template_id])
        return parse_windows(DEFAULT_WINDOWS)

    def zones(self, zone: str, candidates: str | None) -> list[str]:
        return candidates.split() if self.strict and candidates else [zone]

    def slot(self, now: datetime, zone: str, candidates: str | None, own: str | None, template_id: int | None,
             not_before: datetime | None) -> Slot:
        earliest = max(now, not_before) if not_before is not None else now
        return next_slot(earliest, self.windows(own, template_id), self.zones(zone, candidates))


def planner_for(session: Session, task_id: int, among: ColumnElement[bool] | None = None) -> Planner:
    """The task's planner, knowing the windows of the templates its messages (those `among`, if given) use."""
    notification_task = session.get(NotificationTask, task_id)
    assert notification_task is not None, f"notification task {task_id} does not exist"
    used = select(Message.template_id).where(Message.task_id == task_id, Message.template_id.is_not(None))
    used = (used.where(among) if among is not None else used).distinct()
    template_windows = {tid: list(w) for tid, w in session.execute(select(Template.id, Template.windows).where(Template.id.in_(used)))}
    return Planner(tuple(notification_task.windows or ()), template_windows, get_settings().strict_local_time)


@task(name="schedule per window", cache_policy=NO_CACHE)
def schedule(task_id: int, now: datetime | None = None) -> ScheduleResult:
    """CREATED messages become QUEUED (due now) or DELAYED (their window opens later); so do PAUSED ones
    on resume, keeping their expiry; due messages whose window closed unsent wait for the next one."""
    now = now or utcnow()
    with session_scope() as session:
        planner = planner_for(session, task_id)
        tally = ScheduleResult()
        # A message waiting for its chain's earlier channels to fail is not scheduled until released (tasks/delivery/chains.py).
        mine = and_(Message.task_id == task_id, Message.waits_for.is_(None))
        _schedule_created(session, planner, and_(mine, Message.status == MessageStatus.CREATED.value), now, tally)
        _reschedule(session, planner, and_(mine, Message.status == MessageStatus.PAUSED.value), now,
                    "validity period ran out while the task was paused", tally)
        tally.expired += reschedule_closed(session, task_id, now)
    return tally


def schedule_new(session: Session, task_id: int, among: ColumnElement[bool], now: datetime) -> ScheduleResult:
    """Schedule the task's CREATED messages `among` (those an API request just wrote) in the caller's
    transaction, exactly as schedule() would, so the request can answer with their send times."""
    tally = ScheduleResult()
    created = and_(Message.task_id == task_id, among, Message.waits_for.is_(None), Message.status == MessageStatus.CREATED.value)
    _schedule_created(session, planner_for(session, task_id, among), created, now, tally)
    return tally


def reschedule_closed(session: Session, task_id: int, now: datetime) -> int:
    """Messages due but not handed over whose window has closed wait for the next window (DELAYED),
    or end EXPIRED when their validity period runs out first; returns how many expired."""
    closed = and_(
        Message.task_id == task_id, Message.status.in_([s.value for s in SCHEDULED_STATUSES]), Message.handed_at.is_(None),
        Message.provider_message_id.is_(None), Message.window_ends_at <= now,
    )
    if session.execute(select(Message.id).where(closed).limit(1)).first() is None:
        return 0
    tally = ScheduleResult()
    _reschedule(session, planner_for(session, task_id), closed, now,
                "its window closed before it was sent and its validity period ends before the next window opens", tally)
    return tally.expired


def _schedule_created(session: Session, planner: Planner, created: ColumnElement[bool], now: datetime, tally: ScheduleResult) -> None:
    for group in session.execute(select(*_GROUP, Message.validity_period).where(created).distinct()).all():
        *inputs, validity = group
        in_group = and_(created, _same(inputs), Message.validity_period == validity)
        slot = _slot_or_expire(session, planner, in_group, now, inputs, tally)
        if slot is not None:
            _move(session, in_group, slot, inputs[0], now, tally, expires_at=slot.start + timedelta(minutes=validity))


def _reschedule(session: Session, planner: Planner, condition: ColumnElement[bool], now: datetime, expiry_reason: str,
                tally: ScheduleResult) -> None:
    """Give held or late messages their next slot, keeping their expiry."""
    for inputs in session.execute(select(*_GROUP).where(condition).distinct()).all():
        in_group = and_(condition, _same(inputs))
        slot = _slot_or_expire(session, planner, in_group, now, inputs, tally)
        if slot is None:
            continue
        tally.expired += transition(session, and_(in_group, Message.expires_at <= slot.start), MessageStatus.EXPIRED, expiry_reason, "schedule")
        _move(session, in_group, slot, inputs[0], now, tally)


def _slot_or_expire(session: Session, planner: Planner, in_group: ColumnElement[bool], now: datetime, inputs: Sequence[Any],
                    tally: ScheduleResult) -> Slot | None:
    """The group's next slot; a group whose windows never meet in all its zones is EXPIRED instead."""
    try:
        return planner.slot(now, *inputs)
    except NoWindow as exc:
        tally.expired += transition(session, in_group, MessageStatus.EXPIRED, f"never sent: {exc}", "schedule")
        return None


def _move(session: Session, in_group: ColumnElement[bool], slot: Slot, zone: str, now: datetime, tally: ScheduleResult, **values: Any) -> None:
    """QUEUED if the slot has begun, else DELAYED until it does."""
    due = slot.start <= now
    moved = transition(
        session, in_group, MessageStatus.QUEUED if due else MessageStatus.DELAYED, _waiting(slot, zone, due), "schedule",
        scheduled_at=slot.start, window_ends_at=slot.end, **values,
    )
    if due:
        tally.queued += moved
    else:
        tally.delayed += moved


def _same(inputs: Sequence[Any]) -> ColumnElement[bool]:
    """Messages whose scheduling inputs are exactly these (NULL matching NULL)."""
    return and_(*(column.is_(None) if value is None else column == value for column, value in zip(_GROUP, inputs)))


def _waiting(slot: Slot, zone: str, due: bool) -> str:
    if due:
        return "waiting in queue"
    return f"waiting for its window, {slot.start.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} local time"


__all__ = ["Planner", "ScheduleResult", "planner_for", "reschedule_closed", "schedule", "schedule_new"]
