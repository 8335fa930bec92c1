"""The words of the spec as enums: message statuses, channels and notification-task states."""
from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    """Report statuses, word for word from the product spec (§5)."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    DELAYED = "DELAYED"
    PAUSED = "PAUSED"
    SENT = "SENT"
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    READ = "READ"
    UNDELIVERED = "UNDELIVERED"
    EXPIRED = "EXPIRED"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def rank(self) -> int:
        """How far along the delivery path a status is; a status never moves backwards."""
        return _RANK[self]


FINAL_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.READ,
        MessageStatus.UNDELIVERED,
        MessageStatus.EXPIRED,
        MessageStatus.ERROR,
        MessageStatus.SKIPPED,
        MessageStatus.CANCELED,
    }
)

# Statuses of messages that have not been handed to a provider: the only ones that may be
# cancelled, paused or expired without sending.
UNSENT_STATUSES = frozenset(
    {MessageStatus.CREATED, MessageStatus.QUEUED, MessageStatus.DELAYED, MessageStatus.PAUSED}
)

# Unsent messages with a send time: due (QUEUED) or waiting for it (DELAYED). Dispatch sends, expires
# or re-plans these; CREATED ones are not scheduled yet and PAUSED ones wait for a resume.
SCHEDULED_STATUSES = frozenset({MessageStatus.QUEUED, MessageStatus.DELAYED})

# Accepted by a provider, no final status yet: what is polled, and what its sending lifetime can expire.
ACCEPTED_STATUSES = frozenset({MessageStatus.SENT, MessageStatus.PENDING})

# Statuses counted as sent (progress, summary, funnel): a provider took the message, or sending it
# failed (ERROR). EXPIRED, SKIPPED and CANCELED are final without a send, so they are not counted.
HANDED_STATUSES = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.PENDING,
        MessageStatus.DELIVERED,
        MessageStatus.READ,
        MessageStatus.UNDELIVERED,
        MessageStatus.ERROR,
    }
)

# Statuses that mean the recipient got the message.
DELIVERED_STATUSES = frozenset({MessageStatus.DELIVERED, MessageStatus.READ})

_RANK = {
    MessageStatus.CREATED: 0,
    MessageStatus.QUEUED: 1,
    MessageStatus.DELAYED: 1,
    MessageStatus.PAUSED: 1,
    MessageStatus.SENT: 2,
    MessageStatus.PENDING: 3,
    **{status: 4 for status in FINAL_STATUSES},
}


class HistoryGroup(StrEnum):
    """The history list's filter groups (spec §5)."""

    ALL = "all"
    CREATED = "created"
    PENDING = "pending"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    CANCELED = "canceled"
    ERROR = "error"
    DELAYED = "delayed"
    # A required channel's message not sent yet.
    CREATED_OPTIONAL = "created, optional"
    # A channel that failed for a technical problem (ERROR), another channel of its chain used instead.
    OMITTED_OPTIONAL = "omitted, optional"


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    VIBER = "viber"
    WHATSAPP = "whatsapp"
    TELEGRAM = "telegram"
    VK = "vk"
    OK = "ok"
    CHAT = "chat"


class TaskState(StrEnum):
    """A notification task's place in the spec's task list (§3), mirroring its flow run."""

    CREATED = "created"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in progress"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


# The states of a task that has finished (finished_at set): a pause or a failure mark leaves it as it is.
ENDED_TASK_STATES = frozenset({TaskState.COMPLETED, TaskState.CANCELLED, TaskState.FAILED})


class CallbackState(StrEnum):
    """Where a status change stands on its way to the message's `callback url`."""

    DUE = "due"  # to be sent (again) at its next attempt time
    DELIVERED = "delivered"  # the receiver answered 2xx
    GIVEN_UP = "given up"  # every attempt failed until the change was callback_give_up_seconds (24 h) old
    REFUSED = "refused"  # the URL leads to an address notiflow may not reach: never sent
