"""Schedule per window: give every new message its send time and expiry in the subscriber's local time."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, select

from models.db import session_scope
from models.history import transition
from models.status import MessageStatus
from models.tables import Message, NotificationTask, utcnow
from tasks.windows import DEFAULT_WINDOWS, next_send_time, parse_windows


@dataclass(frozen=True)
class ScheduleResult:
    queued: int
    delayed: int
    expired: int = 0


@task(name="schedule per window", cache_policy=NO_CACHE)
def schedule(task_id: int, now: datetime | None = None) -> ScheduleResult:
    """CREATED messages become QUEUED (due now) or DELAYED (their window opens later); so do PAUSED ones
    on resume, keeping their expiry: one whose validity ran out while paused becomes EXPIRED."""
    now = now or utcnow()
    queued = delayed = 0
    with session_scope() as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None, f"notification task {task_id} does not exist"
        windows = parse_windows(notification_task.windows or list(DEFAULT_WINDOWS))
        groups = session.execute(
            select(Message.time_zone, Message.validity_period)
            .where(Message.task_id == task_id, Message.status == MessageStatus.CREATED.value)
            .distinct()
        ).all()
        for zone, validity in groups:
            send_at = next_send_time(now, windows, zone)
            due = send_at <= now
            status = MessageStatus.QUEUED if due else MessageStatus.DELAYED
            description = "waiting in queue" if due else f"waiting for its window, {send_at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} local time"
            moved = transition(
                session,
                and_(
                    Message.task_id == task_id,
                    Message.status == MessageStatus.CREATED.value,
                    Message.time_zone == zone,
                    Message.validity_period == validity,
                ),
                status,
                description,
                "schedule",
                scheduled_at=send_at,
                expires_at=send_at + timedelta(minutes=validity),
            )
            if due:
                queued += moved
            else:
                delayed += moved
        expired = 0
        paused = and_(Message.task_id == task_id, Message.status == MessageStatus.PAUSED.value)
        for (zone,) in session.execute(select(Message.time_zone).where(paused).distinct()).all():
            send_at = next_send_time(now, windows, zone)
            in_zone = and_(paused, Message.time_zone == zone)
            expired += transition(
                session, and_(in_zone, Message.expires_at <= send_at), MessageStatus.EXPIRED,
                "validity period ran out while the task was paused", "schedule",
            )
            due = send_at <= now
            moved = transition(
                session, in_zone,
                MessageStatus.QUEUED if due else MessageStatus.DELAYED,
                "waiting in queue" if due else f"waiting for its window, {send_at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} local time",
                "schedule", scheduled_at=send_at,
            )
            if due:
                queued += moved
            else:
                delayed += moved
    return ScheduleResult(queued=queued, delayed=delayed, expired=expired)

