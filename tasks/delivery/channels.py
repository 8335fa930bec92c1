"""Channels in play: the channels a notification task still has messages to send or to track on."""
from __future__ import annotations

from sqlalchemy import select

from models.db import session_scope
from models.status import FINAL_STATUSES, Channel
from models.tables import Message


def open_channels(task_id: int) -> list[Channel]:
    """Every channel with a message of the task not final yet, in the spec's order (sms first).

    Intake fixes each message's channel, so after it this list only shrinks: a run asks once per entry.
    """
    with session_scope() as session:
        found = set(
            session.scalars(
                select(Message.channel)
                .where(Message.task_id == task_id, Message.status.not_in([s.value for s in FINAL_STATUSES]))
                .distinct()
            )
        )
    return [channel for channel in Channel if channel.value in found]
