"""The lease on a notification task: only its holder dispatches, so two processes never send one task."""
from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import false, or_, select, update
from sqlmodel import Session

from models.db import session_scope
from models.errors import LeaseHeld
from models.settings import get_settings
from models.tables import NotificationTask, utcnow


def new_owner(run_id: str) -> str:
    """A lease owner names the process holding it, so a successor on the same host can tell it is gone."""
    return f"{socket.gethostname()}/{os.getpid()}/{run_id}/{uuid.uuid4().hex[:8]}"


def holder_is_gone(owner: str | None) -> bool:
    """True when the holder was a process on this host that no longer exists (killed, or exited on suspend)."""
    if not owner:
        return True
    host, _, rest = owner.partition("/")
    pid = rest.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid) == os.getpid()


def renew_lease(session: Session, task_id: int, owner: str) -> None:
    """Extend the lease held by `owner`; raise LeaseHeld if someone else took it meanwhile."""
    expires = utcnow() + timedelta(seconds=get_settings().lease_seconds)
    renewed = session.execute(
        update(NotificationTask)
        .where(NotificationTask.id == task_id, NotificationTask.lease_owner == owner)
        .values(lease_expires_at=expires)
    ).rowcount
    if not renewed:
        raise LeaseHeld(f"notification task {task_id}: the dispatch lease of {owner} was taken over; stopping this process")


@task(name="take lease", cache_policy=NO_CACHE)
def take_lease(task_id: int, owner: str, wait_seconds: float | None = None) -> None:
    """Take the task's lease, waiting while a live process holds it (a process still in a batch after a
    resume); a holder on this host whose process is gone is taken over at once."""
    settings = get_settings()
    deadline = time.monotonic() + (settings.lease_seconds + 5 if wait_seconds is None else wait_seconds)
    while True:
        now = utcnow()
        with session_scope() as session:
            holder = session.scalar(select(NotificationTask.lease_owner).where(NotificationTask.id == task_id))
            taken = session.execute(
                update(NotificationTask)
                .where(
                    NotificationTask.id == task_id,
                    or_(
                        NotificationTask.lease_owner.is_(None),
                        NotificationTask.lease_owner == owner,
                        NotificationTask.lease_owner == holder if holder_is_gone(holder) else false(),
                        NotificationTask.lease_expires_at < now,
                    ),
                )
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=settings.lease_seconds))
            ).rowcount
        if taken:
            return
        if time.monotonic() > deadline:
            raise LeaseHeld(
                f"notification task {task_id} is being dispatched by another process; wait for it to finish or cancel its run"
            )
        time.sleep(1.0)


@task(name="release lease", cache_policy=NO_CACHE)
def release_lease(task_id: int, owner: str) -> None:
    with session_scope() as session:
        session.execute(
            update(NotificationTask)
            .where(NotificationTask.id == task_id, NotificationTask.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


def lock_task(session: Session, task_id: int) -> str | None:
    """Lock the task's row (SELECT … FOR UPDATE on PostgreSQL) and return its state.

    Every transaction that changes a task's messages together with the task — dispatch, pause, cancel —
    takes this lock first, so they queue behind each other instead of deadlocking on opposite orders.
    SQLite serialises writers by itself and ignores FOR UPDATE.
    """
    return session.scalar(select(NotificationTask.state).where(NotificationTask.id == task_id).with_for_update())
