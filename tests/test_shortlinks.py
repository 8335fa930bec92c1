"""Short links: URLs in SMS texts become tracked short links, parts are counted after shortening, and a
click over HTTP counts on exactly one message."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlmodel import Session

from models.tables import Message, ShortLink
from tasks.compose.shortlinks import shorten
from tasks.intake.intake import intake
from tasks.intake.validate import parse_bool
from tasks.reporting.report import MESSAGE_COLUMNS, build_report
from tests.files import write_xlsx
from tests.test_steps import make_task_from

LONG_URL = "https://shop.example.com/promotions/winter-2026/landing?utm_source=sms&utm_campaign=winter&customer=000123456789"


def test_every_url_is_replaced_and_sentence_punctuation_stays() -> None:
    text, links = shorten(f"See {LONG_URL}. Or http://a.example/x, ftp://not.shortened", "https://n.io")
    assert [url for _code, url in links] == [LONG_URL, "http://a.example/x"]
    codes = [code for code, _url in links]
    assert text == f"See https://n.io/s/{codes[0]}. Or https://n.io/s/{codes[1]}, ftp://not.shortened"
    assert all(len(code) >= 6 and re.fullmatch(r"[\w-]+", code) for code in codes) and len(set(codes)) == 2


@pytest.mark.parametrize(("cell", "expected"), [(True, True), ("TRUE", True), ("yes", True), (1, True), ("0", False), ("no", False), (False, False)])
def test_booleans_as_spreadsheets_write_them(cell: object, expected: bool) -> None:
    assert parse_bool(cell) is expected


def test_parse_bool_refuses_anything_else() -> None:
    with pytest.raises(ValueError):
        parse_bool("maybe")


def _campaign(tmp_path: Path) -> int:
    text = f"Winter sale: 20% off everything in store and online, today only! Details: {LONG_URL}"
    path = write_xlsx(tmp_path / "links.xlsx", ["phone", "text", "use short links"],
                      [["+79161234567", text, "true"], ["+79161234568", text, "false"]])
    task_id = make_task_from(path)
    intake.fn(task_id)
    return task_id


def test_short_links_make_the_text_cheaper_and_are_stored(tmp_path: Path, engine: Any) -> None:
    task_id = _campaign(tmp_path)
    with Session(engine) as session:
        short, full = session.scalars(select(Message).where(Message.task_id == task_id).order_by(Message.row)).all()
        links = session.scalars(select(ShortLink).where(ShortLink.message_id == short.id)).all()
    assert LONG_URL not in short.text and LONG_URL in full.text
    assert (short.parts, full.parts) == (1, 2)  # counted after shortening
    assert [link.url for link in links] == [LONG_URL] and short.short_links and short.short_links.endswith(links[0].code)


@pytest.mark.e2e
def test_a_click_over_http_redirects_and_counts_on_exactly_one_message(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id = _campaign(tmp_path)
    with Session(engine) as session:
        link = session.scalars(select(ShortLink).join(Message).where(Message.task_id == task_id)).one()
    response = httpx.get(f"{stack.api_url}/s/{link.code}", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == LONG_URL
    assert httpx.get(f"{stack.api_url}/s/not-a-code", follow_redirects=False).status_code == 404
    with Session(engine) as session:
        clicks = {m.row: c for m, c in session.execute(
            select(Message, ShortLink.clicks).outerjoin(ShortLink, ShortLink.message_id == Message.id).where(Message.task_id == task_id)).all()}
    assert clicks == {2: 1, 3: None}
    rows = list(load_workbook(build_report.fn(task_id).path, read_only=True)["Messages"].iter_rows(values_only=True))
    assert [r[MESSAGE_COLUMNS.index("short-link clicks")] for r in rows[1:]] == [1, 0]
    assert rows[1][MESSAGE_COLUMNS.index("short link")].endswith(f"/s/{link.code}")
