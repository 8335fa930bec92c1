"""Applies delivery status reports (polled or pushed by webhook) to messages, forward only."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from models.history import record_each
from models.status import FINAL_STATUSES, MessageStatus
from models.tables import Message
from providers.base import StatusReport


def apply_reports(session: Session, provider: str, reports: Sequence[StatusReport], source: str) -> int:
    """Record each report that moves its message forward (QUEUED → SENT → PENDING → final); returns how many.

    Reports arrive twice (poll and webhook) and out of order; a status never moves backwards and a
    final status is never replaced.
    """
    by_id = {r.provider_message_id: r for r in reports}
    changes: list[dict[str, Any]] = []
    for chunk in _chunks(list(by_id), 1000):
        rows = session.execute(
            select(Message.id, Message.status, Message.provider_message_id).where(
                Message.provider == provider, Message.provider_message_id.in_(chunk)
            )
        ).all()
        for message_id, status, provider_message_id in rows:
            report = by_id[provider_message_id]
            current = MessageStatus(status)
            if current in FINAL_STATUSES or report.status.rank <= current.rank:
                continue
            change: dict[str, Any] = {
                "id": message_id, "status": report.status.value, "status_description": report.description,
            }
            if report.status in FINAL_STATUSES:
                change["next_poll_at"] = None
                if report.status in (MessageStatus.DELIVERED, MessageStatus.READ):
                    change["delivered_at"] = report.at
            changes.append(change)
    record_each(session, changes, source)
    return len(changes)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
