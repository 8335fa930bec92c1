"""Applies delivery status reports (polled, pushed by webhook, or received on a provider's own connection) to
messages, forward only."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from models.db import session_scope
from models.history import record_each
from models.status import DELIVERED_STATUSES, FINAL_STATUSES
from models.tables import Message
from providers.base import StatusReport
from tasks.delivery.parts import known_part_ids, message_reports

_CHUNK = 500


def apply_reports(session: Session, provider: str, reports: Sequence[StatusReport], source: str) -> int:
    """Record each report that moves its message forward (QUEUED → SENT → PENDING → final); returns how many.

    Reports arrive twice (poll and webhook), out of order and from different processes at once, so
    nothing is read first: each UPDATE moves only messages whose status is still behind the report's
    (see models.history.may_become), and a final status is never replaced. A report about one part of a
    multipart SMS counts as its message's status from all its parts (tasks/delivery/parts.py).
    """
    furthest: dict[str, StatusReport] = {}
    for report in message_reports(session, provider, reports):
        known = furthest.get(report.provider_message_id)
        if known is None or report.status.rank >= known.status.rank:
            furthest[report.provider_message_id] = report
    return record_each(
        session, [_change(report) for report in furthest.values()], source,
        by="provider_message_id", within=Message.provider == provider,
    )


def store_pushed_reports(provider: str, reports: Sequence[StatusReport]) -> list[StatusReport]:
    """The report sink of providers whose reports reach them on their own connection (SMPP receipts, read on
    the bind's thread); returns the reports whose message is not known yet, for the provider to offer again.

    A receipt can overtake the recording of its message's id (the dispatcher records it after the whole
    batch is answered): it is not lost, only not placed yet.
    """
    ids = {report.provider_message_id for report in reports}
    with session_scope() as session:
        known = known_part_ids(session, provider, ids)
        rest = list(ids - known)
        for start in range(0, len(rest), _CHUNK):
            known.update(session.scalars(select(Message.provider_message_id).where(
                Message.provider == provider, Message.provider_message_id.in_(rest[start : start + _CHUNK]))))
        placed = [report for report in reports if report.provider_message_id in known]
        if placed:
            apply_reports(session, provider, placed, "receipt")
    return [report for report in reports if report.provider_message_id not in known]


def _change(report: StatusReport) -> dict[str, Any]:
    change: dict[str, Any] = {
        "provider_message_id": report.provider_message_id, "status": report.status.value,
        "status_description": report.description,
    }
    if report.status in FINAL_STATUSES:
        change["next_poll_at"] = None
        if report.status in DELIVERED_STATUSES:
            change["delivered_at"] = report.at
    return change


def unknown_ids(session: Session, provider: str, provider_message_ids: Sequence[str]) -> set[str]:
    """The ids among `provider_message_ids` that no message sent through `provider` carries (yet): a report can
    overtake the dispatcher's record of the send, when the provider's id is known before its answer (our ref)."""
    wanted = set(provider_message_ids)
    if not wanted:
        return set()
    known = session.scalars(
        select(Message.provider_message_id).where(Message.provider == provider, Message.provider_message_id.in_(wanted))
    )
    return wanted - set(known)
