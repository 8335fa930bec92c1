"""Check a task file without storing or sending anything: what would be accepted, when it would go out."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from models.errors import NoWindow
from models.settings import get_settings
from models.status import Channel
from tasks.compose.cost import fee
from tasks.compose.segment import count
from tasks.compose.templates import directory
from tasks.intake.parse import read_task_file
from tasks.intake.validate import PHONE_CHANNELS, Columns, ValidRow, keep_first_unique, validate_rows
from tasks.intake.worker import sent_text
from tasks.schedule.schedule import Planner
from tasks.schedule.windows import parse_windows


def check_file(
    path: str | Path,
    *,
    now: datetime | None = None,
    windows: Sequence[str] = (),
    channel: Channel = Channel.SMS,
) -> dict[str, Any]:
    """The plan for every row, in `notiflow check --json`'s shape (a stable contract)."""
    settings = get_settings()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if windows:
        parse_windows(windows)
    templates = directory()
    planner = Planner(tuple(windows), {t.id: t.windows for t in templates.templates.values()}, settings.strict_local_time)
    with read_task_file(path) as task_file:
        columns = Columns.from_header(task_file.header)
        rows: list[dict[str, Any]] = []
        accepted = rejected = 0
        fees: dict[str, float] = {}
        for result in keep_first_unique(validate_rows(
            task_file.rows, columns, region=settings.default_region, account_zone=settings.timezone,
            default_channel=channel, default_sender=settings.sms_sender, directory=templates,
        )):
            if isinstance(result, ValidRow):
                accepted += 1
                text, _links = sent_text(result.text, result.channel, result.use_short_links, smart=settings.smart_encoding,
                                         link_base=settings.public_url or settings.api_url)
                encoding, units, parts = count(text)
                try:
                    slot = planner.slot(now, result.time_zone, result.stored_time_zones, result.stored_windows, result.template_id,
                                        result.not_before)
                except NoWindow as exc:
                    scheduled_at = expires_at = None
                    never_sent: str | None = str(exc)
                else:
                    scheduled_at, never_sent = _iso(slot.start), None
                    expires_at = _iso(slot.start + timedelta(minutes=result.validity_period))
                price = fee(result.channel, parts, settings.prices)
                fees[result.channel.value] = fees.get(result.channel.value, 0.0) + float(price)
                rows.append({
                    "row": result.row, "accepted": True, "recipient": result.recipient,
                    # The E.164 phone of a row on a phone channel; an e-mail, device or chat row has none.
                    "phone": result.recipient if result.channel in PHONE_CHANNELS else None, "channel": result.channel.value,
                    "encoding": encoding, "parts": parts, "units": units, "fee": str(price), "time_zone": result.time_zone,
                    "scheduled_at": scheduled_at, "expires_at": expires_at, **({"never_sent": never_sent} if never_sent else {}),
                    "unique_message_id": result.unique_message_id, "params": result.params, "errors": [],
                })
            else:
                rejected += 1
                rows.append({
                    "row": result[0].row, "accepted": False,
                    "errors": [{"column": e.column, "code": e.code, "value": e.value, "message": str(e)} for e in result],
                })
    return {
        "accepted": accepted, "rejected": rejected, "unknown_columns": columns.unknown,
        "estimated_fee": {k: f"{v:.2f}" for k, v in fees.items()}, "rows": rows,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
