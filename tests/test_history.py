"""The history export: period, filters and the spec's columns; the scheduled history-report deployment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from prefect.client.orchestration import get_client
from sqlalchemy import select, update
from sqlmodel import Session

from flows.history import period_dates
from models.params import HistoryFilter
from models.tables import Message
from tasks.intake.intake import intake
from tasks.reporting.history import export_history, period
from tasks.reporting.workbook import MESSAGE_COLUMNS
from tests.sandbox_fixtures import wait_until
from tests.test_steps import make_task


def test_default_period_is_from_the_first_of_the_month_to_today() -> None:
    assert period(HistoryFilter(), today=date(2026, 11, 26)) == (date(2026, 11, 1), date(2026, 11, 26))


def test_period_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        period(HistoryFilter(since=date(2026, 11, 20), until=date(2026, 11, 1)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("previous-day", (date(2026, 12, 31), date(2026, 12, 31))), ("previous-month", (date(2026, 12, 1), date(2026, 12, 31))),
     ("current-month", (date(2027, 1, 1), date(2027, 1, 1)))],
)
def test_scheduled_periods(name: str, expected: tuple[date, date]) -> None:
    assert period_dates(name, date(2027, 1, 1)) == expected  # type: ignore[arg-type]


def test_export_filters_by_task_status_and_phone(tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=6)
    intake.fn(task_id)
    with Session(engine) as session:
        first = session.scalars(select(Message).where(Message.task_id == task_id).order_by(Message.id)).first()
        assert first is not None
        session.execute(update(Message).where(Message.id == first.id).values(status="DELIVERED"))
        session.commit()
        phone = first.recipient
    everything = export_history(HistoryFilter(task_id=task_id))
    delivered = export_history(HistoryFilter(task_id=task_id, status="DELIVERED"))
    by_phone = export_history(HistoryFilter(task_id=task_id, phone=phone[-7:]))
    assert (everything.messages, delivered.messages, by_phone.messages) == (6, 1, 1)
    rows = list(load_workbook(delivered.path, read_only=True)["Messages"].iter_rows(values_only=True))
    assert [h.split(" (")[0] for h in rows[0]] == list(MESSAGE_COLUMNS)
    assert rows[1][MESSAGE_COLUMNS.index("recipient")] == phone


def test_messages_of_another_period_are_left_out(tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=2)
    intake.fn(task_id)
    result = export_history(HistoryFilter(task_id=task_id, since=date(2020, 1, 1), until=date(2020, 1, 31)))
    assert result.messages == 0


def test_history_cli_writes_a_file_listed_by_reports(tmp_path: Path) -> None:
    env = os.environ.copy()
    made = subprocess.run([sys.executable, "-m", "notiflow.cli", "history", "--status", "delivered", "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    path = json.loads(made.stdout)["path"]
    listed = subprocess.run([sys.executable, "-m", "notiflow.cli", "reports", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert path in [item["path"] for item in json.loads(listed.stdout)]
    bad = subprocess.run([sys.executable, "-m", "notiflow.cli", "history", "--status", "LOST"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "--status" in bad.stderr


@pytest.mark.e2e
def test_history_report_deployment_is_scheduled_daily_and_monthly_and_links_its_file(stack: Any) -> None:
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("history-report/history-report")
        crons = sorted((s.schedule.cron, s.schedule.timezone, s.parameters["period"]) for s in deployment.schedules)
    assert crons == [("0 6 * * *", "Europe/Moscow", "previous-day"), ("0 6 1 * *", "Europe/Moscow", "previous-month")]
    run = run_deployment("history-report/history-report", parameters={"period": "current-month"}, timeout=0)
    with get_client(sync_client=True) as client:
        final = wait_until(lambda: (s := client.read_flow_run(run.id).state) is not None and s.is_final() and s, timeout=90, interval=0.5)
        assert final.is_completed(), final.message
        artifact = client.read_latest_artifacts(limit=50)
    summary = next(a for a in artifact if a.key == "history-report")
    link = str(summary.data).split("](", 1)[1].split(")", 1)[0]
    assert link.startswith(f"{stack.api_url}/v1/reports/")
    download = httpx.get(link)  # as the UI's link is opened: signed, no token
    assert download.status_code == 200 and download.content[:2] == b"PK"
    assert httpx.get(link.split("?", 1)[0]).status_code == 401
