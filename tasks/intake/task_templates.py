"""The downloadable Excel task templates of the spec: columns, one example row, a sheet describing each column.

Each template is a starting point a customer fills in; its example row passes `notiflow check` as it is,
and its "Columns" sheet is written from tasks.intake.columns, the same table validation uses.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from tasks.intake.columns import BY_NAME, COLUMNS


@dataclass(frozen=True)
class TaskTemplate:
    file: str
    title: str
    purpose: str
    columns: tuple[str, ...]
    # Example values that differ from the column's own example.
    example: Mapping[str, Any] = field(default_factory=dict)


TASK_TEMPLATES: tuple[TaskTemplate, ...] = (
    TaskTemplate(
        "sms-messages.xlsx", "SMS messages", "Transactional SMS: one row per recipient.",
        ("phone", "text", "variables", "external id", "unique message id", "validity period", "send at",
         "allowed time ranges", "callback url"),
        {"send at": None},
    ),
    TaskTemplate(
        "sponsored-messages.xlsx", "Sponsored messages", "Advertising messages, sent in the allowed hours, with tracked links.",
        ("phone", "text", "channel", "message category", "priority", "use short links", "allowed time ranges",
         "validity period", "external id"),
        {"text": "Autumn sale: -20% on everything until Sunday https://example.com/sale", "message category": "promo",
         "priority": "low", "use short links": True, "allowed time ranges": '[["10:00:00", "19:00:00"]]'},
    ),
    TaskTemplate(
        "start-chat-sessions.xlsx", "Start chat sessions", "Open an operator chat session with each customer.",
        ("phone", "channel", "chat id", "bot id", "chat session name", "continue last or start new session",
         "template name", "text", "button", "external id"),
        {"channel": "chat", "text": "Hello! An operator will answer your question about order 1001 here."},
    ),
    TaskTemplate(
        "start-chat-sessions-whatsapp.xlsx", "Start chat sessions in WhatsApp",
        "Start a WhatsApp conversation with an approved template.",
        ("phone", "channel", "messenger type", "template name", "templatenamespace", "template data", "language",
         "text", "media url", "external id"),
        {"channel": "whatsapp", "messenger type": "whatsapp", "text": "Your order 1001 is ready for pickup."},
    ),
    TaskTemplate(
        "universal-api-format.xlsx", "Universal (API format)",
        "The fields of the send API: several channels tried in order, callbacks with your data.",
        ("phone", "email", "channels", "send order", "text", "variables", "external id", "unique message id",
         "validity period", "callback url", "callback data"),
        {"channels": '["sms", "email"]'},
    ),
    TaskTemplate(
        "full-list-of-params.xlsx", "Full list of params",
        "Every column notiflow reads; delete the columns you do not need.",
        tuple(c.name for c in COLUMNS),
        {"channel": "sms", "channels": '["sms", "email"]'},
    ),
)
BY_FILE = {t.file: t for t in TASK_TEMPLATES}

_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")


def workbook_bytes(template: TaskTemplate) -> bytes:
    """The template as an .xlsx file."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Messages"
    sheet.append(list(template.columns))
    sheet.append([_example(template, name) for name in template.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.fill = _HEADER_FILL
    for position, name in enumerate(template.columns, start=1):
        # Phones and ids typed into a number-formatted cell are rounded by Excel: keep the columns as text.
        if name in ("phone", "messenger user id", "external id", "unique message id", "chat id"):
            for row in range(2, 1001):
                sheet.cell(row=row, column=position).number_format = "@"
        sheet.column_dimensions[get_column_letter(position)].width = max(14, min(40, len(name) + 4))
    sheet.freeze_panes = "A2"

    about = workbook.create_sheet("Columns")
    about.append(["column", "group", "required for", "format and limits", "example"])
    for name in template.columns:
        column = BY_NAME[name]
        required = "every message" if name == "text" else ", ".join(sorted(c.value for c in column.required_for))
        about.append([name, column.group, required, column.format, _text(column.example)])
    about.append([])
    about.append([f"{template.title}: {template.purpose} Header spelling is free (case, spaces, underscores); "
                  "unknown columns are reported. Check a filled file with: notiflow check FILE"])
    for cell in about[1]:
        cell.font = Font(bold=True)
        cell.fill = _HEADER_FILL
    for letter, width in zip("ABCDE", (34, 22, 18, 80, 40)):
        about.column_dimensions[letter].width = width
    for row in about.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def write_templates(folder: Path) -> list[Path]:
    """Write all six templates into `folder` (created if needed); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for template in TASK_TEMPLATES:
        path = folder / template.file
        path.write_bytes(workbook_bytes(template))
        paths.append(path)
    return paths


def _example(template: TaskTemplate, name: str) -> Any:
    if name in template.example:
        return template.example[name]
    return BY_NAME[name].example


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
