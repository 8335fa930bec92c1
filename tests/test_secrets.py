"""Secrets kept: card numbers keep their last four digits; CVV, password and secret key values are never
stored or shown, in accepted and rejected rows alike (spec params.md) — in `check --json`, the stored
messages and rejections, and the report."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from sqlalchemy import select
from sqlmodel import Session

from models.params import NotificationTaskParams
from models.tables import Message, Rejection
from tasks.control.lifecycle import open_task
from tasks.intake.intake import intake
from tasks.reporting.report import build_report
from tasks.schedule.schedule import schedule

CARDS = ("4111111111111111", "4111 1111 1111 1111", "5500000000000004", "4000056655665556", "4000 0566 5566 5556")
PASSWORD, SECRET_KEY = "hunter2-Pa55word", "sk_live_51Hx9SECRETkey"
# The CVV, alone as a number (a time stamp's fraction such as .739123 is not it).
CVV = re.compile(r"(?<![0-9.])739(?![0-9])")
HEADER = ["phone", "text", "payment data", "password", "secret key"]
ROWS = [
    # 2: accepted; its card is stored as its last four digits, its password and key not at all
    ["+79161234567", "hello", json.dumps({"card_number": "4111 1111 1111 1111", "transaction_id": "t-1"}), PASSWORD, SECRET_KEY],
    # 3: refused for the CVV in its payment data
    ["+79161234568", "hello", json.dumps({"card_number": "5500000000000004", "cvv": "739"}), PASSWORD, SECRET_KEY],
    # 4: refused: payment data that is not JSON, with a card number and a CVV in it
    ["+79161234569", "hello", '{"card_number": "4000 0566 5566 5556", cvv: 739}', PASSWORD, SECRET_KEY],
    # 5: refused for its phone, every secret filled in
    ["not a phone", "hello", json.dumps({"card_number": "4111111111111111", "transaction_id": "t-2"}), PASSWORD, SECRET_KEY],
    # 6: refused: a CVV written into the card number
    ["+79161234570", "hello", json.dumps({"card_number": "4000056655665556 739"}), PASSWORD, SECRET_KEY],
    # 7: refused: a control character in the password and in the secret key
    ["+79161234571", "hello", "", PASSWORD + "\x07", SECRET_KEY + "\x00"],
    # 8: refused: a CVV pasted as a key of payment data
    ["+79161234572", "hello", json.dumps({"card_number": "5500000000000004", "739": "cvv"}), PASSWORD, SECRET_KEY],
]


def task_file(tmp_path: Path) -> Path:
    path = tmp_path / f"secrets-{uuid.uuid4().hex[:6]}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(ROWS)
    return path


def leaked(text: str) -> list[str]:
    found = [secret for secret in (*CARDS, PASSWORD, SECRET_KEY, "hunter2", "sk_live") if secret in text]
    return found + (["CVV 739"] if CVV.search(text) else [])


def test_check_json_never_shows_a_secret(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "notiflow.cli", "check", str(task_file(tmp_path)), "--json"],
                            capture_output=True, text=True, timeout=120, env=os.environ.copy(), check=False)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["accepted"], plan["rejected"]) == (1, 6)
    assert leaked(result.stdout) == []
    accepted, *rejected = plan["rows"]
    assert accepted["params"]["payment data"] == {"card_number": "**** 1111", "transaction_id": "t-1"}
    assert "password" not in accepted["params"] and "secret key" not in accepted["params"]
    errors = {row["row"]: row["errors"] for row in rejected}
    assert [(e["column"], e["value"]) for e in errors[3]] == [
        ("payment data", '{"card_number": "**** 0004", "cvv": "<hidden>"}')]
    assert [(e["column"], e["value"]) for e in errors[4]] == [("payment data", "<hidden>")]
    assert [(e["column"], e["value"]) for e in errors[6]] == [("payment data", '{"card_number": "<hidden>"}')]
    assert [(e["column"], e["value"]) for e in errors[7]] == [("password", "<hidden>"), ("secret key", "<hidden>")]
    assert errors[7][0]["message"].startswith('row 7, column "password": holds the control character U+0007')
    assert [(e["column"], e["value"]) for e in errors[8]] == [
        ("payment data", '{"card_number": "**** 0004", "<hidden key 2>": "<hidden>"}')]
    assert "(1 others)" in errors[8][0]["message"]


def test_intake_and_report_never_store_a_secret(tmp_path: Path, engine: Any) -> None:
    task_id = open_task.fn(NotificationTaskParams(task_file=str(task_file(tmp_path)), windows=["00:00-24:00"]), str(uuid.uuid4()))
    result = intake.fn(task_id)
    assert (result.accepted, result.rejected) == (1, 6)
    schedule.fn(task_id)
    with Session(engine) as session:
        messages = session.execute(select(Message.__table__).where(Message.task_id == task_id)).mappings().all()
        rejections = session.execute(select(Rejection.__table__).where(Rejection.task_id == task_id)).mappings().all()
    stored = json.dumps([dict(row) for row in (*messages, *rejections)], default=str, ensure_ascii=False)
    assert [m["params"] for m in messages] == [{"payment data": {"card_number": "**** 1111", "transaction_id": "t-1"}}]
    assert len(rejections) == 7
    assert leaked(stored) == []
    report = load_workbook(build_report.fn(task_id).path, read_only=True)
    cells = json.dumps([list(row) for sheet in report.worksheets for row in sheet.iter_rows(values_only=True)], default=str,
                       ensure_ascii=False)
    assert "row 3" not in cells and "has keys other than card_number" in cells  # the rejections are there, masked
    assert leaked(cells) == []
