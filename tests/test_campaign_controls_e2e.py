"""Suspend, resume and cancel of running, suspended and waiting campaigns, through the CLI and the way the
Prefect UI does it (state changes on the API), counted at the sandbox carrier: nothing sent twice,
nothing sent after a cancel, nothing lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled, Suspended
from sqlalchemy import func, select
from sqlmodel import Session

from deployments.runs import start_run
from models.params import NotificationTaskParams
from models.tables import Message, NotificationTask
from notiflow.follow import follow, summary
from tasks.reporting.counts import status_counts
from tests.files import phones, write_xlsx
from tests.sandbox_fixtures import wait_until

pytestmark = pytest.mark.e2e

SIZE = 3200  # messages in a campaign that is paused, cancelled or killed mid-way
IN_FLIGHT = 4 * 50  # the sandbox's requests in flight × the suite's batch size: what one dispatch hands over


def notiflow(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "notiflow.cli", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert result.returncode == 0, result.stderr + result.stdout
    return result


@pytest.fixture
def slow_carrier(stack: Any) -> Iterator[None]:
    """Each send request takes 2 s, so a 3200-message campaign (16 dispatches of 4 requests of 50, ~32 s) is caught mid-way
    even on a loaded machine (at 0.8 s a request, a pause from the CLI, a new process, once landed after
    the last batch on a machine running both database suites)."""
    original = httpx.get(f"{stack.sandbox_url}/config").json()
    httpx.put(f"{stack.sandbox_url}/config", json={**original, "accept_seconds": 2.0}).raise_for_status()
    yield
    httpx.put(f"{stack.sandbox_url}/config", json=original).raise_for_status()


class Campaign:
    def __init__(self, stack: Any, engine: Any, tmp_path: Path, size: int, windows: list[str],
                 extra: Sequence[tuple[str, Any]] = ()):
        """`size` rows of phone and text, plus the `extra` columns: (header, value of row i or a function of i)."""
        rows = [[p, f"Offer {i}", *(v(i) if callable(v) else v for _h, v in extra)]
                for i, p in enumerate(phones(size, start=uuid.uuid4().int % 9_000_000))]
        path = write_xlsx(tmp_path / f"c-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text", *(h for h, _v in extra)], rows)
        self.stack, self.engine, self.size = stack, engine, size
        self.run = start_run(NotificationTaskParams(task_file=str(path), windows=windows))
        self.task_id: int = wait_until(self._task_id, timeout=60, interval=0.3, what="the run to create its task")

    def _task_id(self) -> int | None:
        with Session(self.engine) as session:
            return session.scalar(select(NotificationTask.id).where(NotificationTask.flow_run_id == str(self.run.id)))

    def uid(self) -> str:
        with Session(self.engine) as session:
            return session.scalar(select(NotificationTask.uid).where(NotificationTask.id == self.task_id)) or ""

    def carrier_refs(self) -> list[str]:
        items = httpx.get(f"{self.stack.sandbox_url}/messages", timeout=10).json()["messages"]
        prefix = f"{self.uid()}-"
        return [m["ref"] for m in items if m["ref"].startswith(prefix)]

    def statuses(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return status_counts(session, self.task_id)

    def run_state(self) -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(self.run.id).state

    def wait_for_state(self, check: Any, what: str, timeout: float = 60) -> Any:
        return wait_until(lambda: (s := self.run_state()) is not None and check(s) and s, timeout=timeout, interval=0.3, what=what)

    def resume_and_finish(self) -> None:
        """Resume from the CLI, follow the run to its end, and check every message reached the carrier once."""
        notiflow("resume", str(self.task_id))
        finished = follow(self.run.id, console=None, timeout=180, stop_when_waiting=False)
        assert summary(finished)["state"] == "COMPLETED"
        refs = self.carrier_refs()
        assert len(refs) == len(set(refs)) == self.size

    def in_flight(self) -> int:
        """Messages handed to the carrier whose answer has not come back yet."""
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).where(
                Message.task_id == self.task_id, Message.handed_at.is_not(None), Message.provider_message_id.is_(None)
            )) or 0

    def carrier_is_still(self, seconds: float = 3.0, *, paused: bool = False) -> int:
        """The carrier's count for this campaign, after checking it does not move for `seconds`.

        A paused run's process lives on, so a batch claimed just before the pause is legitimately sent:
        its answer is awaited first. A cancelled run's process is killed and its batch never answers."""
        if paused:
            wait_until(lambda: self.in_flight() == 0, timeout=30, interval=0.2, what="the batch in flight to be answered")
        before = len(self.carrier_refs())
        time.sleep(seconds)
        after = len(self.carrier_refs())
        assert after == before, f"the carrier still received messages: {before} → {after}"
        return after


def later_window(minutes: int) -> str:
    start = datetime.now(ZoneInfo("Europe/Moscow")) + timedelta(minutes=minutes)
    if start.date() != (start + timedelta(minutes=30)).date():
        pytest.skip("the window would cross local midnight")
    return f"{start:%H:%M}-{start + timedelta(minutes=30):%H:%M}"


def test_pause_holds_unsent_messages_and_resume_sends_the_rest_once(stack: Any, engine: Any, tmp_path: Path, slow_carrier: None) -> None:
    campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=["00:00-24:00"])
    wait_until(lambda: len(campaign.carrier_refs()) >= 50, timeout=60, interval=0.2, what="the first batches")
    notiflow("pause", str(campaign.task_id))
    campaign.wait_for_state(lambda s: s.type == StateType.PAUSED, "the run to show Suspended")
    sent_while_paused = campaign.carrier_is_still(paused=True)
    assert 50 <= sent_while_paused < SIZE
    assert campaign.statuses().get("PAUSED", 0) == SIZE - sent_while_paused

    campaign.resume_and_finish()
    assert "PAUSED" not in campaign.statuses()


def test_suspend_from_the_ui_outlives_the_dialog_timeout(stack: Any, engine: Any, tmp_path: Path, slow_carrier: None) -> None:
    campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=["00:00-24:00"])
    wait_until(lambda: len(campaign.carrier_refs()) >= 50, timeout=60, interval=0.2, what="the first batches")
    with get_client(sync_client=True) as client:  # what the UI's Suspend dialog sends, with a 3 s Timeout
        client.set_flow_run_state(campaign.run.id, Suspended(timeout_seconds=3), force=True)
    campaign.wait_for_state(lambda s: s.type == StateType.PAUSED and s.state_details.pause_timeout is None,
                            "the supervisor to lift the dialog's timeout", timeout=30)
    time.sleep(6)  # well past the dialog's timeout
    assert campaign.run_state().type == StateType.PAUSED
    sent_while_paused = campaign.carrier_is_still(2, paused=True)
    assert campaign.statuses().get("PAUSED", 0) == SIZE - sent_while_paused

    campaign.resume_and_finish()


def test_cancel_of_a_running_campaign_sends_nothing_more(stack: Any, engine: Any, tmp_path: Path, slow_carrier: None) -> None:
    campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=["00:00-24:00"])
    wait_until(lambda: len(campaign.carrier_refs()) >= 50, timeout=60, interval=0.2, what="the first batches")
    notiflow("cancel", str(campaign.task_id))
    campaign.wait_for_state(lambda s: s.type == StateType.CANCELLED, "the run to end Cancelled")
    sent = campaign.carrier_is_still()
    statuses = campaign.statuses()
    assert statuses.get("CANCELED", 0) >= SIZE - sent - IN_FLIGHT  # at most the requests in flight were handed over
    assert statuses.get("CANCELED", 0) + sent <= SIZE
    with Session(engine) as session:
        task = session.get(NotificationTask, campaign.task_id)
        assert task is not None and task.state == "cancelled"


def test_cancel_from_the_ui_while_waiting_for_a_window_cancels_every_message(stack: Any, engine: Any, tmp_path: Path) -> None:
    campaign = Campaign(stack, engine, tmp_path, size=20, windows=[later_window(minutes=90)])
    campaign.wait_for_state(lambda s: s.name == "Waiting for window", "the run to wait for its window")
    with get_client(sync_client=True) as client:  # the UI's Cancel on a waiting run: no process, no hook runs
        client.set_flow_run_state(campaign.run.id, Cancelled(), force=True)
    wait_until(lambda: campaign.statuses() == {"CANCELED": 20}, timeout=30, interval=0.5, what="the supervisor to cancel the messages")
    assert campaign.carrier_refs() == []


def test_pause_while_waiting_then_cancel_from_the_cli(stack: Any, engine: Any, tmp_path: Path) -> None:
    campaign = Campaign(stack, engine, tmp_path, size=10, windows=[later_window(minutes=120)])
    campaign.wait_for_state(lambda s: s.name == "Waiting for window", "the run to wait for its window")
    notiflow("pause", str(campaign.task_id))
    assert campaign.statuses() == {"PAUSED": 10}
    notiflow("cancel", str(campaign.task_id))
    assert campaign.run_state().type == StateType.CANCELLED
    assert campaign.statuses() == {"CANCELED": 10}
    assert campaign.carrier_refs() == []


def test_kill_9_of_the_run_process_then_retry_sends_nothing_twice(stack: Any, engine: Any, tmp_path: Path, slow_carrier: None) -> None:
    from prefect.states import State

    campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=["00:00-24:00"])
    wait_until(lambda: len(campaign.carrier_refs()) >= 100, timeout=60, interval=0.2, what="the first batches")
    with Session(engine) as session:
        owner = session.scalar(select(NotificationTask.lease_owner).where(NotificationTask.id == campaign.task_id))
    pid = int(owner.split("/")[1])  # the lease names the process dispatching the task
    os.kill(pid, signal.SIGKILL)
    campaign.wait_for_state(lambda s: s.type in (StateType.CRASHED, StateType.FAILED), "the run to crash", timeout=60)
    wait_until(lambda: _task_state(engine, campaign.task_id) == "failed", timeout=30, interval=0.5, what="the task to show failed")

    with get_client(sync_client=True) as client:  # the UI's Retry
        client.set_flow_run_state(campaign.run.id, State(type=StateType.SCHEDULED, name="AwaitingRetry"), force=True)
    finished = follow(campaign.run.id, console=None, timeout=180, stop_when_waiting=False)
    assert summary(finished)["state"] == "COMPLETED"
    refs = campaign.carrier_refs()
    assert len(refs) == len(set(refs)) == SIZE
    assert sum(campaign.statuses().values()) == SIZE and set(campaign.statuses()) <= {"DELIVERED", "UNDELIVERED"}


def test_editing_a_suspended_runs_parameters_does_not_resend(stack: Any, engine: Any, tmp_path: Path, slow_carrier: None) -> None:
    campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=["00:00-24:00"])
    wait_until(lambda: len(campaign.carrier_refs()) >= 50, timeout=60, interval=0.2, what="the first batches")
    notiflow("pause", str(campaign.task_id))
    campaign.wait_for_state(lambda s: s.type == StateType.PAUSED, "the run to show Suspended")
    with get_client(sync_client=True) as client:
        params = dict(client.read_flow_run(campaign.run.id).parameters["params"])
        params.update(name="renamed while paused", windows=["00:00-23:59"], dry_run=False)
        client.update_flow_run(campaign.run.id, parameters={"params": params})
    campaign.resume_and_finish()


def _task_state(engine: Any, task_id: int) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(NotificationTask.state).where(NotificationTask.id == task_id))
