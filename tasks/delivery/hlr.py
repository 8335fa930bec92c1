"""Phone checks (HLR, spec §9): ask the provider whether numbers are live, store the answers, find and export them."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from openpyxl import Workbook
from sqlalchemy import insert, select
from sqlmodel import Session

from models.db import get_engine, session_scope
from models.settings import get_settings
from models.status import Channel
from models.tables import PhoneCheckResult
from providers.registry import provider_for
from tasks.intake.parse import read_task_file
from tasks.intake.phones import clean_phone
from tasks.intake.validate import Columns, cell_text
from tasks.reporting.workbook import append, header, save

CHECK_COLUMNS = ("check id", "status", "status description", "phone", "check date", "price")


@dataclass
class PhoneCheckRun:
    checked: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)

    @property
    def total_price(self) -> str:
        return str(sum((row["price"] for row in self.checked), start=0))


def phones_from(args: list[str]) -> list[str]:
    """Phones given on the command line, or read from the phone column of a task file."""
    if len(args) == 1 and Path(args[0]).suffix.lower() in {".xlsx", ".xls", ".csv", ".ods"}:
        with read_task_file(args[0]) as task_file:
            position = Columns.from_header(task_file.header).index["phone"]
            return [text for _n, v in task_file.rows if position < len(v) and (text := cell_text(v[position]))]
    return [p.strip() for arg in args for p in re.split(r"[,;\n]", arg) if p.strip()]


def check_phones(phones: list[str], flow_run_id: str | None = None) -> PhoneCheckRun:
    """Check each valid number once; invalid ones are reported with the reason and not sent."""
    settings = get_settings()
    result = PhoneCheckRun()
    numbers: dict[str, None] = {}
    for raw in phones:
        try:
            number = clean_phone(raw, settings.default_region)
        except (ValueError, phonenumbers.NumberParseException) as exc:
            result.invalid.append({"phone": raw, "reason": f"{raw!r} {exc}"})
            continue
        numbers[phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)] = None
    if not numbers:
        return result
    provider = provider_for(Channel.SMS)
    checks = provider.check_phones(list(numbers))
    rows = [
        {"phone": c.phone, "status": c.status, "status_description": c.description, "operator": c.operator,
         "roaming": c.roaming, "ported": c.ported, "price": c.price, "provider": provider.name,
         "flow_run_id": flow_run_id, "created_at": c.at}
        for c in checks
    ]
    with session_scope() as session:
        ids = session.scalars(insert(PhoneCheckResult).returning(PhoneCheckResult.id), rows).all()
    result.checked = [row | {"id": check_id} for row, check_id in zip(rows, ids)]
    return result


def find_checks(phone: str | None = None, since: date | None = None, until: date | None = None) -> list[PhoneCheckResult]:
    """Stored checks, newest first, by phone fragment and period (days in the account's zone)."""
    zone = ZoneInfo(get_settings().timezone)
    query = select(PhoneCheckResult).order_by(PhoneCheckResult.id.desc())
    if phone:
        query = query.where(PhoneCheckResult.phone.contains(re.sub(r"\D", "", phone)))
    if since:
        query = query.where(PhoneCheckResult.created_at >= datetime.combine(since, time(0), zone).astimezone(UTC))
    if until:
        end = datetime.combine(until + timedelta(days=1), time(0), zone).astimezone(UTC)
        query = query.where(PhoneCheckResult.created_at < end)
    with Session(get_engine()) as session:
        return list(session.scalars(query))


def export_checks(checks: list[PhoneCheckResult]) -> Path:
    """The spec's phone-check export: check id, status, status description, phone, check date, price."""
    settings = get_settings()
    zone = ZoneInfo(settings.timezone)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Phone checks")
    sheet.freeze_panes = "A2"
    header(sheet, CHECK_COLUMNS[:4] + (f"check date ({settings.timezone})", "price"))
    for check in checks:
        append(sheet, [check.id, check.status, check.status_description, check.phone,
                      check.created_at.astimezone(zone).replace(tzinfo=None), check.price])
    path = settings.reports_dir.resolve() / f"phone-checks-{datetime.now(zone):%Y-%m-%d-%H%M%S}.xlsx"
    save(workbook, path)
    return path
