"""Multipart SMS: a message its provider took part by part, each part with its own id and receipt, is one
message, whose status its parts' reports make.

- DELIVERED once every part is delivered (one DELIVERED event, when the last part's receipt comes);
- UNDELIVERED (or EXPIRED) as soon as one part fails: the recipient cannot read the whole text;
- PENDING while some parts are delivered and the others have not reported.
- Resolved when a provider reports only one part (some SMSCs report the first or the last part only):
  a message with a delivered part and no failed one whose other parts have sent nothing for
  PART_REPORT_GRACE since its last part report takes the reported parts' status, DELIVERED, at the
  next poll pass over it (tasks/delivery/poll.py); a message with no part report at all ends as any
  silent message does, after its last poll.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from models.history import record_each
from models.status import DELIVERED_STATUSES, FINAL_STATUSES, MessageStatus
from models.tables import Message, ProviderPart, utcnow
from providers.base import StatusReport

# How long the other parts of a message may stay silent after one part's final report before the message
# takes that report's status: parts of one text reach one handset together, so their receipts come
# within seconds of each other; a minute of silence means the SMSC reports only some parts.
PART_REPORT_GRACE = timedelta(seconds=60)
_CHUNK = 500


def record_parts(session: Session, provider: str, parts: Mapping[int, Sequence[str]], at: datetime | None = None) -> None:
    """Record the part ids of messages just sent (message id → its parts' ids, in order), each SENT.

    An id the SMSC gave before (SMSC counters wrap, and restart) now names the new part.
    """
    rows = [
        {"provider": provider, "provider_message_id": part_id, "message_id": message_id, "part": number,
         "status": MessageStatus.SENT.value, "status_description": "accepted by the provider", "updated_at": at or utcnow()}
        for message_id, ids in parts.items() for number, part_id in enumerate(ids, start=1)
    ]
    if not rows:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for start in range(0, len(rows), _CHUNK):
        statement = dialect.insert(ProviderPart).values(rows[start : start + _CHUNK])
        session.execute(statement.on_conflict_do_update(
            index_elements=["provider", "provider_message_id"],
            set_={column: statement.excluded[column] for column in ("message_id", "part", "status", "status_description", "updated_at")},
        ))


def known_part_ids(session: Session, provider: str, ids: Iterable[str]) -> set[str]:
    wanted = list(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        found.update(session.scalars(select(ProviderPart.provider_message_id).where(
            ProviderPart.provider == provider, ProviderPart.provider_message_id.in_(wanted[start : start + _CHUNK]))))
    return found


def message_reports(session: Session, provider: str, reports: Sequence[StatusReport]) -> list[StatusReport]:
    """The reports as their messages' reports: one about a part moves that part (forward only) and is
    replaced by its message's status from all its parts; any other report is kept as it is."""
    ids = list({report.provider_message_id for report in reports})
    parts: dict[str, Any] = {}
    for start in range(0, len(ids), _CHUNK):
        parts.update((row.provider_message_id, row) for row in session.execute(
            select(ProviderPart.id, ProviderPart.provider_message_id, ProviderPart.message_id, ProviderPart.status)
            .where(ProviderPart.provider == provider, ProviderPart.provider_message_id.in_(ids[start : start + _CHUNK]))))
    if not parts:
        return list(reports)
    furthest: dict[str, StatusReport] = {}
    for report in reports:
        if report.provider_message_id in parts:
            known = furthest.get(report.provider_message_id)
            if known is None or report.status.rank >= known.status.rank:
                furthest[report.provider_message_id] = report
    moves = []
    for part_id, report in furthest.items():
        current = MessageStatus(parts[part_id].status)
        if current not in FINAL_STATUSES and report.status.rank >= current.rank:
            moves.append({"id": parts[part_id].id, "status": report.status.value,
                          "status_description": report.description, "updated_at": report.at})
    if moves:
        session.execute(update(ProviderPart), moves)
    touched = {parts[part_id].message_id for part_id in furthest}
    others = [report for report in reports if report.provider_message_id not in parts]
    return others + _from_parts(session, touched)


def _from_parts(session: Session, message_ids: set[int]) -> list[StatusReport]:
    """Each message's report as its parts make it (see the module's rules); none while no part has news."""
    if not message_ids:
        return []
    own_ids = select(Message.id, Message.provider_message_id).where(Message.id.in_(message_ids))
    if session.get_bind().dialect.name == "postgresql":
        # Two processes may each apply one part of a message at once: the second to lock it sees both parts.
        own_ids = own_ids.with_for_update()
    provider_ids = {row.id: row.provider_message_id for row in session.execute(own_ids)}
    rows = session.execute(
        select(ProviderPart.message_id, ProviderPart.part, ProviderPart.status, ProviderPart.status_description,
               ProviderPart.updated_at)
        .where(ProviderPart.message_id.in_(message_ids)).order_by(ProviderPart.message_id, ProviderPart.part)
    ).all()
    by_message: dict[int, list[Any]] = {}
    for row in rows:
        by_message.setdefault(row.message_id, []).append(row)
    reports = []
    for message_id, message_parts in by_message.items():
        provider_id = provider_ids.get(message_id)
        report = _message_status(message_parts)
        if provider_id and report is not None:
            status, description, at = report
            reports.append(StatusReport(provider_message_id=provider_id, status=status, description=description, at=at))
    return reports


def _message_status(parts: list[Any]) -> tuple[MessageStatus, str, datetime] | None:
    total = len(parts)
    failed = [p for p in parts if MessageStatus(p.status) in FINAL_STATUSES - DELIVERED_STATUSES]
    if failed:
        first = failed[0]
        return MessageStatus(first.status), f"part {first.part} of {total}: {first.status_description}", first.updated_at
    delivered = [p for p in parts if MessageStatus(p.status) in DELIVERED_STATUSES]
    latest = max(p.updated_at for p in parts)
    if len(delivered) == total:
        return MessageStatus.DELIVERED, f"delivered (all {total} parts)", latest
    if delivered or any(MessageStatus(p.status) is MessageStatus.PENDING for p in parts):
        return MessageStatus.PENDING, f"{len(delivered)} of {total} parts delivered", latest
    return None


def resolve_partly_reported(session: Session, provider: str, message_ids: Sequence[int], now: datetime) -> int:
    """Messages of `message_ids` with a delivered part, no failed part, and no part report for PART_REPORT_GRACE
    become DELIVERED (the SMSC reports only some parts); returns how many moved."""
    if not message_ids:
        return 0
    rows = []
    for start in range(0, len(message_ids), _CHUNK):
        rows += session.execute(
            select(ProviderPart.message_id, ProviderPart.status, ProviderPart.updated_at)
            .where(ProviderPart.provider == provider, ProviderPart.message_id.in_(message_ids[start : start + _CHUNK]))
        ).all()
    by_message: dict[int, list[Any]] = {}
    for row in rows:
        by_message.setdefault(row.message_id, []).append(row)
    changes = []
    for message_id, parts in by_message.items():
        statuses = [MessageStatus(p.status) for p in parts]
        delivered = sum(s in DELIVERED_STATUSES for s in statuses)
        reported = [p.updated_at for p, s in zip(parts, statuses) if s is not MessageStatus.SENT]
        if (not delivered or delivered == len(parts) or any(s in FINAL_STATUSES - DELIVERED_STATUSES for s in statuses)
                or now - max(reported) < PART_REPORT_GRACE):
            continue
        changes.append({
            "id": message_id, "status": MessageStatus.DELIVERED.value, "delivered_at": max(reported), "next_poll_at": None,
            "status_description": (f"delivered: {delivered} of {len(parts)} parts reported delivered, the others "
                                   f"not reported within {int(PART_REPORT_GRACE.total_seconds())} s"),
        })
    return record_each(session, changes, "poll")
