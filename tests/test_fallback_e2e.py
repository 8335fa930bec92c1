"""Fallback, end to end: rows whose channels are tried in order, through a real deployment run and the
sandbox carrier over HTTP, counted at the carrier (spec §4)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlmodel import Session

from models.tables import Message, NotificationTask, StatusEvent
from tests.files import phones, write_xlsx

pytestmark = pytest.mark.e2e

HEADER = ["phone", "email", "text", "channel", "channels", "required", "send order", "validity period"]


def notiflow(*args: str, timeout: float = 300) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "notiflow.cli", *args], capture_output=True, text=True, timeout=timeout,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr + result.stdout
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


@pytest.fixture
def carrier(stack: Any) -> Iterator[httpx.Client]:
    """The session's sandbox carrier, its config restored after the test."""
    with httpx.Client(base_url=stack.sandbox_url, timeout=10) as client:
        original = client.get("/config").json()
        yield client
        client.put("/config", json=original).raise_for_status()


def configure(carrier: httpx.Client, **changes: Any) -> None:
    carrier.put("/config", json={**carrier.get("/config").json(), **changes}).raise_for_status()


def run_rows(tmp_path: Path, rows: list[list[Any]]) -> tuple[int, dict[int, dict[str, str]], Counter[str]]:
    """Run a task of `rows` to its end; returns its id, each row's channel → status, and what the carrier took per channel."""
    task_id, chains, taken, _report = run_rows_with_report(tmp_path, rows)
    return task_id, chains, taken


def run_rows_with_report(tmp_path: Path, rows: list[list[Any]]) -> tuple[int, dict[int, dict[str, str]], Counter[str], str]:
    path = write_xlsx(tmp_path / f"chain-{uuid.uuid4().hex[:6]}.xlsx", HEADER, rows)
    summary = notiflow("run", str(path), "--json", "--wait", "--window", "00:00-24:00")
    task_id = summary["task_id"]
    from models.db import get_engine

    with Session(get_engine()) as session:
        uid = session.scalar(select(NotificationTask.uid).where(NotificationTask.id == task_id))
        chains: dict[int, dict[str, str]] = {}
        for row, channel, status in session.execute(select(Message.row, Message.channel, Message.status).where(Message.task_id == task_id)):
            chains.setdefault(row, {})[channel] = status
    taken = Counter(m["channel"] for m in httpx.get(f"{os.environ['NOTIFLOW_SANDBOX_URL']}/messages", timeout=10).json()["messages"]
                    if m["ref"].startswith(f"{uid}-"))
    return task_id, chains, taken, summary["report"]


def test_a_failing_viber_falls_back_to_sms_and_the_rest_of_the_chain_is_skipped(carrier: httpx.Client, tmp_path: Path, engine: Any) -> None:
    configure(carrier, delivered_rates={"viber": 0.0, "sms": 1.0})
    rows = [[p, f"c{i}@example.com", f"Order {i} is ready", None, '["viber", "sms", "email"]', None, None, None]
            for i, p in enumerate(phones(6, start=uuid.uuid4().int % 9_000_000))]

    task_id, chains, taken, report = run_rows_with_report(tmp_path, rows)

    assert list(chains.values()) == [{"viber": "UNDELIVERED", "sms": "DELIVERED", "email": "SKIPPED"}] * 6
    workbook = load_workbook(report, read_only=True)
    fallback = list(workbook["Fallback"].iter_rows(values_only=True))
    assert fallback[0] == ("row", "channels in order", "statuses in order", "delivered by")
    assert [r[1:] for r in fallback[1:]] == [("viber → sms → email", "UNDELIVERED → DELIVERED → SKIPPED", "sms")] * 6
    assert ("viber → sms → email", "delivered by sms", 6) in list(workbook["Summary"].iter_rows(values_only=True))
    assert taken == Counter({"viber": 6, "sms": 6})  # e-mail never sent
    with Session(engine) as session:
        skipped = session.scalars(select(StatusEvent.description).where(StatusEvent.task_id == task_id, StatusEvent.status == "SKIPPED")).all()
    assert skipped == ["skipped: another channel of its chain delivered"] * 6


def test_a_channel_silent_past_its_lifetime_moves_the_chain_on(carrier: httpx.Client, tmp_path: Path) -> None:
    # Viber accepts and never reports; after its 1-minute sending lifetime the cascade goes on to SMS.
    configure(carrier, silent_channels=["viber"], delivered_rates={"sms": 1.0})
    rows = [[p, None, "Your code is 1234", None, '["viber", "sms"]', None, None, 1] for p in phones(2, start=uuid.uuid4().int % 9_000_000)]

    _task_id, chains, taken = run_rows(tmp_path, rows)

    # Viber ends EXPIRED (not delivered within its lifetime) or UNDELIVERED (no report by its last poll).
    assert all(chain["sms"] == "DELIVERED" and chain["viber"] in ("EXPIRED", "UNDELIVERED") for chain in chains.values()), chains
    assert taken == Counter({"viber": 2, "sms": 2})


def test_a_required_channel_is_sent_although_another_delivered(carrier: httpx.Client, tmp_path: Path) -> None:
    configure(carrier, delivered_rates={"viber": 1.0, "email": 1.0})
    rows = [[p, f"r{i}@example.com", "Your receipt", "email", '["viber", "sms"]', True, None, None]
            for i, p in enumerate(phones(3, start=uuid.uuid4().int % 9_000_000))]

    _task_id, chains, taken = run_rows(tmp_path, rows)

    assert list(chains.values()) == [{"email": "DELIVERED", "viber": "DELIVERED", "sms": "SKIPPED"}] * 3
    assert taken == Counter({"email": 3, "viber": 3})


def test_parallel_send_order_sends_every_channel_at_once(carrier: httpx.Client, tmp_path: Path) -> None:
    configure(carrier, delivered_rates={"viber": 1.0, "sms": 1.0})
    rows = [[p, None, "Flash sale", None, '["viber", "sms"]', None, "parallel", None] for p in phones(3, start=uuid.uuid4().int % 9_000_000)]

    _task_id, chains, taken = run_rows(tmp_path, rows)

    assert list(chains.values()) == [{"viber": "DELIVERED", "sms": "DELIVERED"}] * 3
    assert taken == Counter({"viber": 3, "sms": 3})
