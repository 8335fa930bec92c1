"""A pause holds until someone resumes, a cancel keeps what was sent in view, a failing carrier suspends the
campaign: real served runs of `notiflow server`, counted at the sandbox carrier."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling
from sqlalchemy import func, select
from sqlmodel import Session

from models.settings import get_settings
from models.tables import Message, NotificationTask, StatusEvent
from tasks.control.control import hold_unsent
from tests.sandbox_fixtures import wait_until
from tests.test_campaign_controls_e2e import SIZE, Campaign, notiflow

pytestmark = pytest.mark.e2e

ALL_DAY = ["00:00-24:00"]


@contextmanager
def carrier(stack: Any, **changes: Any) -> Iterator[None]:
    original = httpx.get(f"{stack.sandbox_url}/config").json()
    httpx.put(f"{stack.sandbox_url}/config", json={**original, **changes}).raise_for_status()
    try:
        yield
    finally:
        httpx.put(f"{stack.sandbox_url}/config", json=original).raise_for_status()


def task_row(engine: Any, task_id: int) -> NotificationTask:
    with Session(engine) as session:
        task = session.get(NotificationTask, task_id)
        assert task is not None
        return task


@pytest.mark.parametrize("polls_pending", [False, True], ids=["no-polls-pending", "polls-pending"])
def test_a_pause_between_two_batches_of_a_live_run_holds_past_the_in_process_wait(
    polls_pending: bool, stack: Any, engine: Any, tmp_path: Path
) -> None:
    # 0.8 s per send request; with polls pending, every message sent stays PENDING for 12 s.
    with carrier(stack, accept_seconds=0.8, **({"pending_seconds": 12} if polls_pending else {})):
        campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=ALL_DAY)
        wait_until(lambda: len(campaign.carrier_refs()) >= 100, timeout=60, interval=0.2, what="the first batches")
        # The database half of a pause lands while the run's process is alive between two batches and
        # Prefect has not stopped it: nothing but the task's own state tells the run it is paused.
        hold_unsent(campaign.task_id)
        campaign.wait_for_state(lambda s: s.type == StateType.PAUSED, "the run to suspend itself", timeout=30)
        if polls_pending:
            assert campaign.statuses().keys() & {"SENT", "PENDING"}, "no status poll was pending"
        sent = campaign.carrier_is_still(get_settings().max_inprocess_wait_seconds + 3, paused=True)
        assert campaign.run_state().type == StateType.PAUSED
        assert task_row(engine, campaign.task_id).state == "paused"
        assert campaign.statuses().get("PAUSED", 0) == SIZE - sent
    campaign.resume_and_finish()


def test_a_cancel_reconciles_what_was_in_flight_and_tracks_what_went_out_to_a_report(
    stack: Any, engine: Any, tmp_path: Path
) -> None:
    # 6 s per send request, so the cancel's kill (~2 s after it) lands inside one; reports take 3 s to be final.
    with carrier(stack, accept_seconds=6, pending_seconds=3):
        campaign = Campaign(stack, engine, tmp_path, size=SIZE, windows=ALL_DAY)
        wait_until(lambda: len(campaign.carrier_refs()) >= 50 and campaign.in_flight(), timeout=60, interval=0.2,
                   what="a batch in flight after the first one")
        with get_client(sync_client=True) as client:  # the UI's Cancel on a running run
            client.set_flow_run_state(campaign.run.id, Cancelling(), force=True)
        campaign.wait_for_state(lambda s: s.type == StateType.CANCELLED, "the run to end Cancelled")
        wait_until(lambda: task_row(engine, campaign.task_id).report_path, timeout=90, interval=0.5,
                   what="the tracking run to write the report")

    refs = campaign.carrier_refs()
    statuses = campaign.statuses()
    assert len(refs) == len(set(refs))
    assert set(statuses) <= {"DELIVERED", "UNDELIVERED", "CANCELED"}, statuses
    assert statuses.get("DELIVERED", 0) + statuses.get("UNDELIVERED", 0) == len(refs)
    assert statuses["CANCELED"] == SIZE - len(refs)
    with Session(engine) as session:
        recorded = session.scalar(select(func.count()).where(
            Message.task_id == campaign.task_id, Message.provider_message_id.is_not(None)))
    assert recorded == len(refs)  # every message the carrier took is known with its id, none left in flight
    with Session(engine) as session:  # the batch the kill cut off was found at the carrier by its key
        reconciled = session.scalar(select(func.count()).where(
            StatusEvent.task_id == campaign.task_id, StatusEvent.source == "reconcile", StatusEvent.status == "SENT"))
    assert reconciled and reconciled > 0
    task = task_row(engine, campaign.task_id)
    assert task.state == "cancelled"
    assert task.state_description == f"cancelled by the user: {len(refs)} messages went out, {SIZE - len(refs)} cancelled"
    assert Path(task.report_path or "").is_file()
    with get_client(sync_client=True) as client:
        tracking = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"track delivery of task {campaign.task_id}"])))
    assert [run.state.type for run in tracking if run.state] == [StateType.COMPLETED]


def test_a_failing_carrier_suspends_the_campaign_with_the_reason_and_resume_continues(
    stack: Any, engine: Any, tmp_path: Path
) -> None:
    with carrier(stack, fault_500_rate=1.0):
        campaign = Campaign(stack, engine, tmp_path, size=60, windows=ALL_DAY)
        state = campaign.wait_for_state(lambda s: s.type == StateType.PAUSED, "the campaign to suspend itself", timeout=60)
        assert state.name == "Suspended" and "requests to the sms carrier failed" in (state.message or "")
        task = task_row(engine, campaign.task_id)
        assert task.state == "paused" and task.state_description == state.message
        assert campaign.statuses() == {"PAUSED": 60}
        with Session(engine) as session:
            spent = session.scalar(select(func.max(Message.attempts)).where(Message.task_id == campaign.task_id))
        assert spent < get_settings().max_send_attempts
        assert campaign.carrier_refs() == []
    campaign.resume_and_finish()


def test_a_paused_task_whose_run_wakes_for_a_status_poll_polls_only_and_suspends(
    stack: Any, engine: Any, tmp_path: Path
) -> None:
    later = datetime.now(ZoneInfo(get_settings().timezone)) + timedelta(minutes=90)
    if later.date() != (later + timedelta(minutes=30)).date() or later.date() != datetime.now(ZoneInfo(get_settings().timezone)).date():
        pytest.skip("the later window would cross local midnight")
    anytime = '[["00:00:00", "23:59:59"]]'
    after_90_minutes = f'[["{later:%H:%M:00}", "{later + timedelta(minutes=30):%H:%M:00}"]]'
    # Half the rows may go now, half in 90 minutes; those sent stay PENDING 15 s, so the run leaves its
    # process to wait for a status poll (the poll schedule's 13 s → 20 s step is over the in-process wait).
    with carrier(stack, pending_seconds=15):
        campaign = Campaign(stack, engine, tmp_path, size=20, windows=[],
                            extra=[("allowed time ranges", lambda i: anytime if i < 10 else after_90_minutes)])
        campaign.wait_for_state(lambda s: s.name == "Waiting for status poll", "the run to wait for a status poll", timeout=60)
        assert len(campaign.carrier_refs()) == 10
        # Paused while no process runs: only the database knows; the run wakes up by itself.
        hold_unsent(campaign.task_id)
        state = campaign.wait_for_state(lambda s: s.type == StateType.PAUSED, "the woken run to suspend itself", timeout=60)
        assert state.name == "Suspended"
        statuses = campaign.statuses()
        assert statuses["PAUSED"] == 10 and statuses.get("DELIVERED", 0) + statuses.get("UNDELIVERED", 0) == 10, statuses
        assert len(campaign.carrier_refs()) == 10
        assert task_row(engine, campaign.task_id).state == "paused"
    notiflow("cancel", str(campaign.task_id))
