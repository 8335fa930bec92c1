"""End to end: a campaign across time zones, each row with its own window; the carrier records the
handset's local time of every message it accepted, and none lies outside its row's window."""
from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import select
from sqlmodel import Session

from deployments.runs import start_run
from models.params import NotificationTaskParams
from models.tables import Message, NotificationTask
from tests.files import write_xlsx
from tests.sandbox_fixtures import wait_until
from tests.test_campaign_e2e import notiflow

# Numbers whose zone is unambiguous, so the carrier knows the handset's clock.
ZONES = {
    "America/New_York": "+1212555{:04d}", "America/Los_Angeles": "+1415555{:04d}", "Asia/Tokyo": "+8190123{:05d}",
    "Europe/Berlin": "+4930{:08d}", "Europe/London": "+44207946{:04d}",
}
PER_GROUP = 3


def _range(start: datetime, end: datetime) -> str:
    return f'[["{start:%H:%M:%S}", "{end:%H:%M:%S}"]]'


def test_every_message_reaches_the_handset_inside_its_window(stack: Any, engine: Any, tmp_path: Path) -> None:
    seed = random.randrange(1000)
    rows: list[list[Any]] = []
    later = 0
    for zone, pattern in ZONES.items():
        local = datetime.now(ZoneInfo(zone)).replace(microsecond=0)
        groups = {
            "open": (local - timedelta(minutes=1), local + timedelta(minutes=10)),
            "opens soon": (local + timedelta(seconds=20), local + timedelta(minutes=10)),
            "later": (local + timedelta(hours=3), local + timedelta(hours=4)),
        }
        if any(start.date() != local.date() or end.date() != local.date() for start, end in groups.values()):
            continue  # a window across local midnight: this zone sits the run out
        for name, (start, end) in groups.items():
            for i in range(PER_GROUP):
                rows.append([pattern.format(seed + len(rows)), f"{name} in {zone} #{i}", _range(start, end)])
            later += PER_GROUP if name == "later" else 0
    if later < 2 * PER_GROUP:
        pytest.skip("too many zones are near local midnight right now")
    path = write_xlsx(tmp_path / "zones.xlsx", ["phone", "text", "allowed time ranges"], rows)

    run = start_run(NotificationTaskParams(task_file=str(path), name=f"zones {seed}"))

    def ingested() -> NotificationTask | None:
        with Session(engine) as session:
            found = session.scalars(select(NotificationTask).where(NotificationTask.flow_run_id == str(run.id))).first()
            return found if found is not None and found.ingested_at is not None else None

    task = wait_until(ingested, timeout=60, interval=0.5, what="the task file to be read")
    assert (task.accepted, task.rejected) == (len(rows), 0)
    with get_client(sync_client=True) as client:
        wait_until(
            lambda: (s := client.read_flow_run(run.id).state) is not None and s.name == "Waiting for window"
            and f"({later} to send" in (s.message or "") and s,
            timeout=120, interval=0.5, what="the run to send what is due and wait for the later windows",
        )

    with Session(engine) as session:
        messages = {f"{task.uid}-{m.id}": m for m in session.scalars(select(Message).where(Message.task_id == task.id))}
    accepted = [m for m in httpx.get(f"{stack.sandbox_url}/messages", timeout=10).json()["messages"] if m["ref"] in messages]
    assert len(accepted) == len(rows) - later
    for item in accepted:
        message = messages[item["ref"]]
        start, end = (time.fromisoformat(t) for t in (message.windows or "").split("-"))
        arrived = datetime.fromisoformat(item["local_time"])
        assert arrived.tzinfo is not None and arrived.utcoffset() == arrived.astimezone(ZoneInfo(message.time_zone)).utcoffset()
        assert start <= arrived.time() < end, f"{message.text} reached the handset at {arrived}, outside {message.windows}"
        assert "later" not in message.text

    notiflow("cancel", str(task.id))
    with Session(engine) as session:
        left = session.scalars(select(Message.status).where(Message.task_id == task.id, Message.provider_message_id.is_(None))).all()
    assert left == ["CANCELED"] * later
