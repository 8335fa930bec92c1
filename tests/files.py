"""Builds task files for tests, the way customers write them."""
from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook


def write_xlsx(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path


def phones(count: int, start: int = 0) -> list[str]:
    """Valid Russian mobile numbers, distinct for distinct `start`s."""
    return [f"+7916{start + i:07d}" for i in range(count)]


# Every column some channel requires, so one file can carry rows on every channel (the spec's full list).
EVERY_CHANNEL_HEADER = (
    "phone", "email", "push registration id", "platform", "chat id", "bot id", "chat session name",
    "continue last or start new session", "template name", "templatenamespace", "text", "channel",
)


def channel_rows(channel: str, count: int, start: int = 0, phone_prefix: str = "+7916") -> list[list[Any]]:
    """`count` valid rows on `channel` under EVERY_CHANNEL_HEADER, recipients distinct for distinct `start`s;
    phones are `phone_prefix` and 7 digits (+81901 for Tokyo)."""
    rows: list[list[Any]] = []
    for i in range(count):
        number = f"{phone_prefix}{start + i:07d}"
        cells: dict[str, Any] = {"text": f"Hello {start + i} on {channel}", "channel": channel}
        if channel == "email":
            cells["email"] = f"subscriber{start + i}@example.com"
        elif channel == "push":
            cells |= {"push registration id": f"fcm:token-{start + i}", "platform": "Android"}
        elif channel == "chat":
            cells |= {"chat id": f"chat-{start + i}", "bot id": "bot-support", "chat session name": "Orders",
                      "continue last or start new session": True, "template name": "order_ready"}
        else:
            cells["phone"] = number
            if channel == "whatsapp":
                cells |= {"template name": "order_ready", "templatenamespace": "c8ae5f90_307a"}
        rows.append([cells.get(column) for column in EVERY_CHANNEL_HEADER])
    return rows


_INLINE_CELL = re.compile(rb'<c([^>]*?) t="inlineStr"([^>]*)><is><t(?: xml:space="preserve")?>(.*?)</t></is></c>', re.S)


def with_shared_strings(source: Path, target: Path) -> Path:
    """`source` (an .xlsx openpyxl wrote, its text cells inline) as Excel saves it: every text once, in the
    shared-strings table, and cells referring to it by number."""
    table: dict[bytes, int] = {}

    def refer(cell: re.Match[bytes]) -> bytes:
        index = table.setdefault(cell.group(3), len(table))
        return b'<c%s t="s"%s><v>%d</v></c>' % (cell.group(1), cell.group(2), index)

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as converted:
        for info in original.infolist():
            data = original.read(info)
            if info.filename.startswith("xl/worksheets/sheet"):
                data = _INLINE_CELL.sub(refer, data)
            elif info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                                    b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
            elif info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", b'<Relationship Id="rIdShared" Type="http://schemas.openxmlformats.org/'
                                    b'officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>')
            converted.writestr(info.filename, data)
        items = b"".join(b'<si><t xml:space="preserve">%s</t></si>' % text for text in table)
        converted.writestr("xl/sharedStrings.xml", b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                           b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="%d" uniqueCount="%d">%s</sst>'
                           % (len(table), len(table), items))
    return target
