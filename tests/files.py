"""Builds task files for tests, the way customers write them."""
from __future__ import annotations

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
