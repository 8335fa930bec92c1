"""End to end, as a user drives it: the `notiflow` CLI starts notification-task deployment runs on a real
Prefect server, the served flow sends through the sandbox carrier over HTTP, and the report lands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook
from prefect.client.orchestration import get_client
from sqlalchemy import func, select
from sqlmodel import Session

from deployments.runs import start_run
from models.params import NotificationTaskParams
from models.status import Channel
from models.tables import Message, NotificationTask, StatusEvent
from notiflow.follow import follow, summary
from tasks.reporting.report import MESSAGE_COLUMNS
from tests.files import EVERY_CHANNEL_HEADER, channel_rows, phones, write_xlsx
from tests.sandbox_fixtures import wait_until

pytestmark = pytest.mark.e2e


def notiflow(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notiflow.cli", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def carrier_refs(sandbox_url: str, uid: str) -> list[str]:
    items = httpx.get(f"{sandbox_url}/messages", timeout=10).json()
    items = items["messages"] if isinstance(items, dict) else items
    return [m["ref"] for m in items if m["ref"].startswith(f"{uid}-")]


def task_file(tmp_path: Path, good: int, bad_rows: list[list[Any]]) -> Path:
    rows: list[list[Any]] = [[p, f"Hello {i}, your order is ready", "sms"] for i, p in enumerate(phones(good, start=uuid.uuid4().int % 9_000_000))]
    return write_xlsx(tmp_path / f"campaign-{uuid.uuid4().hex[:6]}.xlsx", ["Phone", "Text", "Channel"], rows + bad_rows)


@pytest.fixture(scope="module")
def finished_campaign(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = task_file(tmp_path_factory.mktemp("e2e"), good=120, bad_rows=[["12", "x", "sms"], ["+79161234567", "", "sms"], ["+79161234567", "hi", "fax"]])
    result = notiflow("run", str(path), "--json", "--window", "00:00-24:00", "--name", "e2e campaign")
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_run_completes_the_campaign_and_prints_the_json_summary(finished_campaign: dict[str, Any]) -> None:
    summary_ = finished_campaign
    assert summary_["state"] == "COMPLETED"
    assert set(summary_) >= {"task_id", "flow_run_id", "state", "counts", "rejected", "report"}
    assert sum(summary_["counts"].values()) == 120
    assert set(summary_["counts"]) <= {"DELIVERED", "UNDELIVERED"}
    assert summary_["rejected"] == 3
    assert summary_["ui_url"].endswith(f"/runs/flow-run/{summary_['flow_run_id']}")


def test_every_accepted_message_reached_the_carrier_exactly_once(stack: Any, engine: Any, finished_campaign: dict[str, Any]) -> None:
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == finished_campaign["task_id"]))
    refs = carrier_refs(stack.sandbox_url, uid)
    assert len(refs) == len(set(refs)) == 120


def test_report_lists_every_message_with_the_spec_columns(finished_campaign: dict[str, Any]) -> None:
    workbook = load_workbook(finished_campaign["report"], read_only=True)
    rows = list(workbook["Messages"].iter_rows(values_only=True))
    assert [h.split(" (")[0] for h in rows[0]] == list(MESSAGE_COLUMNS)
    assert len(rows) == 121
    statuses = {row[MESSAGE_COLUMNS.index("status")] for row in rows[1:]}
    assert statuses <= {"DELIVERED", "UNDELIVERED"}
    rejected = list(workbook["Rejected rows"].iter_rows(values_only=True))[1:]
    assert [(r[0], r[1]) for r in rejected] == [(122, "phone"), (123, "text"), (124, "channel")]


def test_flow_run_is_named_after_the_task_and_shows_in_prefect(finished_campaign: dict[str, Any]) -> None:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(finished_campaign["flow_run_id"]))
    assert run.name == "e2e campaign"
    assert run.state is not None and run.state.is_completed()


def test_run_shows_progress_counts_and_a_summary_in_the_ui(stack: Any, finished_campaign: dict[str, Any]) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    task_id = finished_campaign["task_id"]
    with get_client(sync_client=True) as client:
        def latest(what: str) -> Any:
            key = f"notification-task-{task_id}-{what}"
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert artifacts, f"no artifact {key}"
            return max(artifacts, key=lambda a: a.created)

        assert latest("progress").data == 100.0
        counts = latest("counts").data
        table = json.loads(counts) if isinstance(counts, str) else counts
        assert table[0]["channel"] == "sms" and table[0]["total"] == 120
        summary_ = latest("summary").data
    assert "**120** rows accepted, **3** rejected" in summary_
    assert "delivery rate" in summary_ and "Top rejection reasons" in summary_
    # The summary's links open without a token (the UI cannot send one): they are signed.
    funnel_link = summary_.split("![delivery funnel](", 1)[1].split(")", 1)[0]
    report_link = summary_.split("[Download the Excel report](", 1)[1].split(")", 1)[0]
    assert funnel_link.startswith(f"{stack.api_url}/v1/tasks/{task_id}/funnel.svg?")
    funnel = httpx.get(funnel_link)
    assert funnel.status_code == 200 and funnel.text.startswith("<svg") and ">120<" in funnel.text
    report = httpx.get(report_link)
    assert report.status_code == 200 and report.content[:2] == b"PK"
    assert httpx.get(report_link.split("?", 1)[0]).status_code == 401


def test_second_run_of_the_same_task_sends_nothing_again(stack: Any, engine: Any, finished_campaign: dict[str, Any]) -> None:
    task_id = finished_campaign["task_id"]
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
        events_before = session.scalar(select(func.count()).where(StatusEvent.task_id == task_id, StatusEvent.status == "SENT"))
    sends_before = httpx.get(f"{stack.sandbox_url}/stats").json()["send_requests"]
    run = start_run(NotificationTaskParams(task_file="(ignored for an existing task)", task_id=task_id, windows=["00:00-24:00"]))
    finished = follow(run.id, console=None, timeout=120)
    assert summary(finished)["state"] == "COMPLETED"
    assert len(carrier_refs(stack.sandbox_url, uid)) == 120
    assert httpx.get(f"{stack.sandbox_url}/stats").json()["send_requests"] == sends_before
    with Session(engine) as session:
        events_after = session.scalar(select(func.count()).where(StatusEvent.task_id == task_id, StatusEvent.status == "SENT"))
    assert events_after == events_before == 120


def test_campaign_waits_for_its_window_without_a_process_and_sends_when_it_opens(stack: Any, engine: Any, tmp_path: Path) -> None:
    moscow = ZoneInfo("Europe/Moscow")
    # 90 s out: the run must reach scheduling more than the in-process wait limit (5 s in tests) before the
    # window opens, which a loaded machine once took more than 30 s to do.
    opens = (datetime.now(moscow) + timedelta(seconds=90)).replace(microsecond=0)
    if opens.date() != (opens + timedelta(minutes=5)).date():
        pytest.skip("the window would cross local midnight")
    window = f"{opens:%H:%M:%S}-{opens + timedelta(minutes=5):%H:%M:%S}"
    run = start_run(NotificationTaskParams(task_file=str(task_file(tmp_path, good=10, bad_rows=[])), windows=[window]))
    with get_client(sync_client=True) as client:
        waiting = wait_until(
            lambda: (s := client.read_flow_run(run.id).state) is not None and s.name == "Waiting for window" and s,
            timeout=85, interval=0.5, what="the run to wait for its window",
        )
        assert waiting.is_scheduled() and "continues at" in (waiting.message or "")
    finished = follow(run.id, console=None, timeout=240, stop_when_waiting=False)
    result = summary(finished)
    assert result["state"] == "COMPLETED", result
    with Session(engine) as session:
        sent_times = session.scalars(select(Message.sent_at).where(Message.task_id == result["task_id"])).all()
    assert len(sent_times) == 10 and all(t is not None and t >= opens for t in sent_times)


def carrier_messages(sandbox_url: str, uid: str) -> dict[str, tuple[str, str]]:
    """What the carrier took for the task with this uid: ref → (channel, recipient)."""
    listed = httpx.get(f"{sandbox_url}/messages", timeout=10).json()["messages"]
    return {m["ref"]: (m["channel"], m["to"]) for m in listed if m["ref"].startswith(f"{uid}-")}


def test_campaign_with_rows_on_every_channel_sends_and_tracks_each_on_its_channel(stack: Any, engine: Any, tmp_path: Path) -> None:
    start = uuid.uuid4().int % 9_000_000
    rows = [row for channel in Channel for row in channel_rows(channel.value, 3, start=start)]
    path = write_xlsx(tmp_path / "every-channel.xlsx", EVERY_CHANNEL_HEADER, rows)

    result = notiflow("run", str(path), "--json", "--window", "00:00-24:00", "--name", "every channel")

    assert result.returncode == 0, result.stderr + result.stdout
    summary_ = json.loads(result.stdout)
    assert summary_["state"] == "COMPLETED" and summary_["rejected"] == 0
    assert sum(summary_["counts"].values()) == 27 and set(summary_["counts"]) <= {"DELIVERED", "UNDELIVERED"}
    with Session(engine) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == summary_["task_id"]))
        stored = session.execute(
            select(Message.id, Message.channel, Message.recipient, Message.status).where(Message.task_id == summary_["task_id"])
        ).all()
    assert sorted(channel for _id, channel, _to, _status in stored) == sorted(c.value for c in Channel for _ in range(3))
    assert carrier_messages(stack.sandbox_url, uid) == {f"{uid}-{i}": (channel, to) for i, channel, to, _status in stored}
    workbook = load_workbook(summary_["report"], read_only=True)
    reported = list(workbook["Messages"].iter_rows(values_only=True))[1:]
    assert {row[MESSAGE_COLUMNS.index("channel")] for row in reported} == {c.value for c in Channel}


def test_campaign_waits_for_the_window_of_one_channel_after_sending_another(stack: Any, engine: Any, tmp_path: Path) -> None:
    # E-mails go out in the account's zone (Moscow), SMS in the subscriber's (Tokyo, six hours ahead): one
    # window is open in Moscow now, the other opens in Tokyo in 30 s, so the run sends the e-mails, then waits.
    # (With 15 s, a slow machine's run reached scheduling when the window was under the in-process wait
    # of 5 s away: it slept in its process and never showed "Waiting for window".)
    moscow, tokyo = datetime.now(ZoneInfo("Europe/Moscow")), datetime.now(ZoneInfo("Asia/Tokyo"))
    opens = (tokyo + timedelta(seconds=30)).replace(microsecond=0)
    open_now = (moscow - timedelta(minutes=1), moscow + timedelta(minutes=10))
    sms_window = (opens, opens + timedelta(minutes=5))
    if len({t.date() for t in (*open_now, *sms_window)}) > 1:
        pytest.skip("a window would cross local midnight")
    windows = [f"{a:%H:%M:%S}-{b:%H:%M:%S}" for a, b in (open_now, sms_window)]
    start = uuid.uuid4().int % 9_000_000
    rows = channel_rows("email", 3, start=start) + channel_rows("sms", 3, start=start, phone_prefix="+81901")
    path = write_xlsx(tmp_path / "two-zones.xlsx", EVERY_CHANNEL_HEADER, rows)

    run = start_run(NotificationTaskParams(task_file=str(path), windows=windows))

    with get_client(sync_client=True) as client:
        waiting = wait_until(
            lambda: (s := client.read_flow_run(run.id).state) is not None and s.name == "Waiting for window" and s,
            timeout=60, interval=0.5, what="the run to wait for the SMS window",
        )
        assert "3 to send" in (waiting.message or "")
    finished = follow(run.id, console=None, timeout=120, stop_when_waiting=False)
    result = summary(finished)
    assert result["state"] == "COMPLETED", result
    assert sum(result["counts"].values()) == 6 and set(result["counts"]) <= {"DELIVERED", "UNDELIVERED"}
    with Session(engine) as session:
        sent = dict(session.execute(
            select(Message.channel, func.min(Message.sent_at)).where(Message.task_id == result["task_id"]).group_by(Message.channel)
        ).all())
    assert sent["email"] < opens <= sent["sms"]


def test_cli_refuses_a_missing_file_with_a_clear_error(stack: Any, tmp_path: Path) -> None:
    result = notiflow("run", str(tmp_path / "missing.xlsx"), "--json")
    assert result.returncode == 1
    assert "does not exist" in result.stderr and result.stdout == ""


def test_send_notification_from_a_form_runs_as_a_notification_task(stack: Any, engine: Any) -> None:
    from prefect.deployments import run_deployment

    name = f"quick send {uuid.uuid4().hex[:6]}"
    run = run_deployment("send-notification/send-notification", timeout=0, parameters={"message": {
        "recipients": ["+79167770001", "+79167770002"], "text": "Hello {name}!", "variables": {"name": "Anna"},
        "name": name, "windows": ["00:00-24:00"]}})
    with get_client(sync_client=True) as client:
        sent = wait_until(lambda: (s := client.read_flow_run(run.id).state) is not None and s.is_final() and s, timeout=90, interval=0.5)
        assert sent.is_completed(), sent.message

    def campaign_run() -> str | None:
        with Session(engine) as session:
            return session.scalar(select(NotificationTask.flow_run_id).where(NotificationTask.name == name))

    campaign_id = uuid.UUID(wait_until(campaign_run, timeout=60, interval=0.5, what="the campaign run to start"))
    finished = follow(campaign_id, console=None, timeout=120, stop_when_waiting=False)
    result = summary(finished)
    assert result["state"] == "COMPLETED" and sum(result["counts"].values()) == 2
    with Session(engine) as session:
        texts = session.scalars(select(Message.text).where(Message.task_id == result["task_id"])).all()
    assert texts == ["Hello Anna!", "Hello Anna!"]
