"""Excel output shared by the task report and the history export: the spec's message columns (§8)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.styles import Font
from sqlalchemy import func, select

from models.tables import Message, ShortLink

# The history export's columns, in the order of the product spec (§8).
MESSAGE_COLUMNS = (
    "message id", "bulk id", "group id", "flow id", "status", "status description", "channel", "sender",
    "recipient", "text", "fee", "mobile operator", "template id", "template name", "variables", "part count",
    "e-mail views", "e-mail clicks", "short link", "short-link clicks", "created at", "sent at", "delivered at",
    "send-start time", "delivery expiry time",
)
_TIME_COLUMNS = 5  # the last five columns are times, written in the account's zone

# A text starting with one of these is a formula to Excel (OWASP's CSV-injection list: = + - @ tab CR),
# and openpyxl itself stores a text starting with "=" as a formula and one like "#N/A" as an error.
_FORMULA_START = frozenset("=+-@\t\r")
_ACTIVE_START = _FORMULA_START | {code[0] for code in ERROR_CODES}


def header(sheet: Any, names: Sequence[str]) -> None:
    cells = []
    for name in names:
        cell = _text_cell(sheet, name)
        cell.font = Font(bold=True)
        cells.append(cell)
    sheet.append(cells)


def append(sheet: Any, values: Iterable[Any]) -> None:
    """Append a row whose texts stay texts: what a user, a carrier or a file wrote is shown exactly as
    written and never becomes a live formula (`=HYPERLINK(...)` leaked other cells) or an error cell."""
    sheet.append([_text_cell(sheet, v) if isinstance(v, str) and v[:1] in _ACTIVE_START else v for v in values])


def _text_cell(sheet: Any, text: str) -> Any:
    cell = WriteOnlyCell(sheet, value=text)
    # Stored as a string (inline <is>, no <f>), whatever openpyxl guessed from the first character;
    # the quote prefix (a style flag, not a character) keeps it text when someone edits it in Excel.
    cell.data_type = "s"
    if text[:1] in _FORMULA_START:
        cell.quotePrefix = True
    return cell


def write_messages(
    workbook: Workbook, messages: Iterable[Message], zone_name: str, clicks: Mapping[int, int] | None = None,
    title: str = "Messages",
) -> int:
    """A sheet with one row per message (`clicks`: short-link clicks by message id); returns how many rows it wrote."""
    zone = ZoneInfo(zone_name)
    sheet = workbook.create_sheet(title)
    sheet.freeze_panes = "A2"
    times = MESSAGE_COLUMNS[-_TIME_COLUMNS:]
    header(sheet, MESSAGE_COLUMNS[:-_TIME_COLUMNS] + tuple(f"{c} ({zone_name})" for c in times))
    written = 0
    for message in messages:
        append(sheet, _message_row(message, zone, (clicks or {}).get(message.id or 0, 0)))
        written += 1
    return written


def save(workbook: Workbook, path: Path) -> None:
    """Save through a temporary file, so a reader never sees a half-written workbook."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.xlsx")
    workbook.save(tmp)
    tmp.replace(path)


def _local(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    return None if moment is None else moment.astimezone(zone).replace(tzinfo=None)


def _message_row(message: Message, zone: ZoneInfo, clicks: int) -> list[Any]:
    return [
        message.id, message.bulk_id, message.group_id, message.flow_id, message.status, message.status_description,
        message.channel, message.sender if message.channel == "sms" else None, message.recipient, message.text,
        message.fee, None, message.template_id, message.template_name, json.dumps(message.variables, ensure_ascii=False) if message.variables else None,
        message.parts, message.opens, 0, message.short_links, clicks,
        _local(message.created_at, zone), _local(message.sent_at, zone), _local(message.delivered_at, zone),
        _local(message.scheduled_at, zone), _local(message.expires_at, zone),
    ]


def clicks_by_message(session: Any, message_ids: Any) -> dict[int, int]:
    """Short-link clicks per message, for the messages `message_ids` (a select of Message.id) picks."""
    return {
        message_id: int(total or 0)
        for message_id, total in session.execute(
            select(ShortLink.message_id, func.sum(ShortLink.clicks))
            .where(ShortLink.message_id.in_(message_ids))
            .group_by(ShortLink.message_id)
        ).all()
    }
