"""The database tables: notification tasks, their messages, rejected rows and the status history."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from models.status import CallbackState, Channel, MessageStatus, TaskState


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend: SQLite stores no offset, so normalise on the way in and out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: notiflow stores aware UTC times only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# SQLite only autoincrements an INTEGER PRIMARY KEY; elsewhere a message table outgrows 32 bits.
_BIGINT_ID = BigInteger().with_variant(Integer(), "sqlite")


IN_FLIGHT = "handed_at IS NOT NULL AND provider_message_id IS NULL"


def _partial_index(name: str, present: str, *columns: str) -> Index:
    """An index of the rows where `present` is set, on SQLite and PostgreSQL alike."""
    where = text(f"{present} IS NOT NULL")
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


def _ts(**kwargs: Any) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), **kwargs))


class NotificationTask(SQLModel, table=True):
    """A campaign built from one uploaded file; one flow run of the notification-task deployment."""

    __tablename__ = "notification_task"
    # One API task per token and day (api/messages.py): two requests starting the day cannot make two.
    __table_args__ = (Index("uq_notification_task_api_day", "api_token_id", "api_day", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    # Unique across databases: the prefix of every message's idempotency key at the provider.
    uid: str = Field(sa_column=Column(String(32), unique=True, nullable=False))
    name: str = Field(sa_column=Column(String(255), nullable=False, index=True))
    file: str = Field(sa_column=Column(Text, nullable=False))
    source_file: str = Field(sa_column=Column(Text, nullable=False))
    windows: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    channels: list[str] = Field(default_factory=lambda: [Channel.SMS.value], sa_column=Column(JSON, nullable=False))
    dry_run: bool = False
    state: TaskState = Field(default=TaskState.CREATED, sa_column=Column(String(16), nullable=False, index=True))
    state_description: str = ""
    flow_run_id: str | None = Field(default=None, sa_column=Column(String(36), unique=True))
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    accepted: int = 0
    rejected: int = 0
    unknown_columns: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    report_path: str | None = Field(default=None, sa_column=Column(Text))
    lease_owner: str | None = Field(default=None, sa_column=Column(String(128)))
    lease_expires_at: datetime | None = _ts()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))
    ingested_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    # Set on the tasks POST /v1/messages writes into, one per API token and day (the account's zone,
    # "YYYY-MM-DD"); the api-dispatcher flow sends them. None for a task from a file.
    api_token_id: int | None = None
    api_day: str | None = Field(default=None, sa_column=Column(String(10)))


class Message(SQLModel, table=True):
    """One recipient on one channel: what is sent, when, what it costs and what became of it."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("task_id", "row", "channel", name="uq_message_task_row_channel"),
        Index("ix_message_task_status_scheduled", "task_id", "status", "scheduled_at"),
        # Partial indexes: these columns are empty for most of a message's life (all of it at intake,
        # where a million rows are inserted), and every query on them asks for a value.
        _partial_index("ix_message_task_poll", "next_poll_at", "task_id", "next_poll_at"),
        _partial_index("ix_message_provider_message_id", "provider_message_id", "provider_message_id"),
        _partial_index("ix_message_template_id", "template_id", "template_id"),
        _partial_index("ix_message_task_waits", "waits_for", "task_id", "row"),
        # Dispatch claims the next due messages of a task, high priority first, in row order within it.
        Index("ix_message_claim", "task_id", "status", "priority", "id"),
        # Messages in flight (handed to a provider, no answer recorded): a few at any time, asked for at every
        # dispatch span; without it each span scanned every queued message of a million-message task.
        Index("ix_message_in_flight", "task_id", "channel",
              sqlite_where=text(IN_FLIGHT), postgresql_where=text(IN_FLIGHT)),
        # An API message's unique message id, per token (see unique_key): the database refuses a second one.
        Index("uq_message_unique_key", "unique_key", "step", unique=True,
              sqlite_where=text("unique_key IS NOT NULL"), postgresql_where=text("unique_key IS NOT NULL")),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_ID, primary_key=True, autoincrement=True))
    task_id: int = Field(foreign_key="notification_task.id", nullable=False)
    row: int = Field(nullable=False, description="Excel row number in the task file (header is row 1)")
    # A phone (E.164) for most channels; an e-mail address, a device token or a chat id for the others.
    recipient: str = Field(sa_column=Column(String(1024), nullable=False))
    channel: Channel = Field(sa_column=Column(String(16), nullable=False))
    sender: str = Field(default="", sa_column=Column(String(64), nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    encoding: str = Field(default="GSM-7", sa_column=Column(String(8), nullable=False))
    parts: int = 1
    fee: Decimal = Field(default=Decimal("0"), sa_column=Column(Numeric(14, 4), nullable=False))
    status: MessageStatus = Field(default=MessageStatus.CREATED, sa_column=Column(String(16), nullable=False))
    status_description: str = Field(default="", sa_column=Column(Text, nullable=False))
    provider: str | None = Field(default=None, sa_column=Column(String(32)))
    provider_message_id: str | None = Field(default=None, sa_column=Column(String(128)))
    external_id: str | None = Field(default=None, sa_column=Column(Text))
    bulk_id: str | None = Field(default=None, sa_column=Column(String(255)))
    group_id: str | None = Field(default=None, sa_column=Column(String(255)))
    flow_id: str | None = Field(default=None, sa_column=Column(String(255)))
    variables: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    time_zone: str | None = Field(default=None, sa_column=Column(String(64)))
    template_id: int | None = None
    # Short links that replaced the text's URLs, space-separated (their clicks live in short_link).
    short_links: str | None = Field(default=None, sa_column=Column(Text))
    # E-mail opens: how often its open-tracking pixel was fetched, and when first (views in the history export).
    opens: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    opened_at: datetime | None = _ts()
    template_name: str | None = Field(default=None, sa_column=Column(String(255)))
    validity_period: int = Field(default=1440, description="minutes from scheduled_at until EXPIRED")
    unique_message_id: str | None = Field(default=None, sa_column=Column(Text))
    # API messages only: SHA-256 of the token's id and the unique message id (an id may be 10 KB, too long to
    # index), so a repeat through any of the token's API tasks finds the first message.
    unique_key: str | None = Field(default=None, sa_column=Column(String(64)))
    # Scheduling inputs from the row: earliest send time (send at / start date + time), its own
    # windows (allowed time ranges), and every zone the number may be in (strict local time).
    not_before: datetime | None = _ts()
    # Space-separated "HH:MM:SS-HH:MM:SS" windows and zones: plain text, so messages can be grouped by them.
    windows: str | None = Field(default=None, sa_column=Column(Text))
    time_zones: str | None = Field(default=None, sa_column=Column(Text))
    # When the window scheduled_at lies in closes: a message not handed over by then waits for the next.
    window_ends_at: datetime | None = _ts()
    # The row's other columns of the full param list, parsed to their types; secrets are never stored.
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    # The row's channel chain (spec §4): this message's place in it (0 is the first channel tried), how
    # the chain is sent ("sequential", a cascade, or "parallel"; None for a row of one channel), and
    # whether this channel is sent whatever the others' outcome.
    step: int = 0
    # 0 high, 1 normal, 2 low (the row's `priority`): dispatch sends higher priorities first.
    priority: int = 1
    send_order: str | None = Field(default=None, sa_column=Column(String(16)))
    required: bool = False
    # The channels this message falls back from, while it waits for them to fail (not scheduled, not
    # sent); None once released, and for every message not held by its chain.
    waits_for: str | None = Field(default=None, sa_column=Column(String(255)))
    # Dispatch bookkeeping: set before the provider call, so a kill mid-call leaves a record that the
    # outcome is unknown (handed_at set, no provider id) and must be reconciled, not blindly resent.
    attempts: int = 0
    handed_at: datetime | None = _ts()
    handed_by: str | None = Field(default=None, sa_column=Column(String(128)))
    poll_count: int = 0
    next_poll_at: datetime | None = _ts()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    scheduled_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    delivered_at: datetime | None = _ts()
    expires_at: datetime | None = _ts()
    # When the status last changed. Intake still appends its CREATED events by this stamp (one bulk insert);
    # every later change records its events from the rows its UPDATE returned.
    status_updated_at: datetime | None = _ts(index=True)


class ProviderPart(SQLModel, table=True):
    """One part of a multipart SMS as its provider took it: an SMSC gives each part its own id and receipt.

    The message keeps the first part's id as its provider_message_id; its status comes from all its
    parts' (tasks/delivery/parts.py). A message sent in one piece has no rows here.
    """

    __tablename__ = "provider_part"
    # SMSC ids are unique per SMSC, so per provider instance: a receipt finds its part by this pair.
    __table_args__ = (UniqueConstraint("provider", "provider_message_id", name="uq_provider_part_id"),)

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_ID, primary_key=True, autoincrement=True))
    provider: str = Field(sa_column=Column(String(32), nullable=False))
    provider_message_id: str = Field(sa_column=Column(String(128), nullable=False))
    message_id: int = Field(sa_column=Column(_BIGINT_ID, ForeignKey("message.id"), nullable=False, index=True))
    part: int = Field(description="1 for the first part")
    status: MessageStatus = Field(default=MessageStatus.SENT, sa_column=Column(String(16), nullable=False))
    status_description: str = Field(default="", sa_column=Column(Text, nullable=False))
    # When it was sent, then when its last report came.
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Rejection(SQLModel, table=True):
    """A task-file row (or one of its fields) that was not accepted, and why."""

    __tablename__ = "rejection"
    __table_args__ = (UniqueConstraint("task_id", "row", "column", "code", name="uq_rejection"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="notification_task.id", nullable=False, index=True)
    row: int
    column: str = Field(sa_column=Column(String(255), nullable=False))
    code: str = Field(sa_column=Column(String(64), nullable=False))
    value: str = Field(default="", sa_column=Column(Text, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))


class StatusEvent(SQLModel, table=True):
    """Append-only history of every status a message took: when, from where, and why."""

    __tablename__ = "status_event"

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_ID, primary_key=True, autoincrement=True))
    message_id: int = Field(nullable=False, index=True)
    task_id: int = Field(nullable=False, index=True)
    status: MessageStatus = Field(sa_column=Column(String(16), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    source: str = Field(sa_column=Column(String(32), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Callback(SQLModel, table=True):
    """A status event of a message whose row has a `callback url`, on its way there: the callbacks' outbox.

    Written with its event (models/history.py), so it exists exactly when the event does; `next_attempt_at`
    is set while it is due and cleared once it is delivered, given up or refused.
    """

    __tablename__ = "callback"
    __table_args__ = (
        _partial_index("ix_callback_due", "next_attempt_at", "next_attempt_at"),
        # Order per message: a change is sent once no earlier change of its message is still due.
        _partial_index("ix_callback_message_due", "next_attempt_at", "message_id", "event_id"),
    )

    event_id: int = Field(sa_column=Column(_BIGINT_ID, primary_key=True, autoincrement=False))
    message_id: int = Field(sa_column=Column(_BIGINT_ID, nullable=False))
    state: CallbackState = Field(default=CallbackState.DUE, sa_column=Column(String(16), nullable=False))
    attempts: int = 0
    next_attempt_at: datetime | None = _ts()
    # A delivery process holds the callbacks it is sending until then (a claim, not a transaction).
    claimed_by: str | None = Field(default=None, sa_column=Column(String(64)))
    claimed_until: datetime | None = _ts()
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    response_status: int | None = None
    finished_at: datetime | None = _ts()


class PhoneCheckResult(SQLModel, table=True):
    """One phone check (HLR lookup, spec §9): the number's status, network and the check's price."""

    __tablename__ = "phone_check"

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    status_description: str = Field(default="", sa_column=Column(Text, nullable=False))
    operator: str | None = Field(default=None, sa_column=Column(String(128)))
    roaming: bool = False
    ported: bool = False
    price: Decimal = Field(default=Decimal("0"), sa_column=Column(Numeric(14, 4), nullable=False))
    provider: str = Field(sa_column=Column(String(32), nullable=False))
    flow_run_id: str | None = Field(default=None, sa_column=Column(String(36)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))


class Template(SQLModel, table=True):
    """A stored template (spec §1): everything a message needs except the recipient and its variables.

    `channels` holds one configuration per channel, tried in order; their shapes are the
    `models.template_schema` channel models.
    """

    __tablename__ = "template"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(255), nullable=False, index=True))
    windows: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    channels: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Sender(SQLModel, table=True):
    """A sender name registered for one channel; templates may only use registered senders (spec §1)."""

    __tablename__ = "sender"
    __table_args__ = (UniqueConstraint("name", "channel", name="uq_sender_name_channel"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(64), nullable=False))
    channel: Channel = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ShortLink(SQLModel, table=True):
    """A tracked short link that replaced a URL in one message's text; each redirect counts a click."""

    __tablename__ = "short_link"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(sa_column=Column(String(32), unique=True, nullable=False))
    message_id: int = Field(foreign_key="message.id", nullable=False, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    clicks: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ApiRequest(SQLModel, table=True):
    """A POST /v1/messages answered 201 with an `Idempotency-Key`: the same key again gets this answer again."""

    __tablename__ = "api_request"
    __table_args__ = (UniqueConstraint("api_token_id", "key", name="uq_api_request_key"),)

    id: int | None = Field(default=None, primary_key=True)
    api_token_id: int = Field(foreign_key="api_token.id", nullable=False)
    key: str = Field(sa_column=Column(String(255), nullable=False))
    # SHA-256 of the request body: a key sent again with another body is a client's mistake, not a retry.
    request_hash: str = Field(sa_column=Column(String(64), nullable=False))
    status_code: int
    response: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ApiToken(SQLModel, table=True):
    """A named API token: only its SHA-256 is kept, so the database never holds one that works."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(255), unique=True, nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: datetime | None = _ts()
    # When a request last carried it (written at most once a minute per API process).
    last_used_at: datetime | None = _ts()
