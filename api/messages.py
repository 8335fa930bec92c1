"""Messages over HTTP (spec §2, §5, §8): send notifications in seconds, list and show messages with their status
history and fallback chain, cancel one that has not gone out.

POST /v1/messages only writes: the notifications become messages of the token's API task of the day
(tasks/intake/api_messages.py), scheduled at once, and the long-lived api-dispatcher flow hands them to the
providers (flows/api_dispatcher.py). A flow run per request would start seconds late.
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from api.errors import ApiError, documented
from api.inputs import MAX_ID, PlainText
from models.db import json_text, session_scope
from models.status import Channel, HistoryGroup, MessageStatus
from models.tables import ApiRequest, ApiToken, Message, StatusEvent
from tasks.control.control import MESSAGE_CANCELABLE, cancel_message
from tasks.intake.api_messages import Accepted, NotificationsRefused, accept_notifications
from tasks.intake.columns import ALIASES, BY_NAME, normalise_header
from tasks.reporting.history import in_group

router = APIRouter(prefix="/messages", tags=["messages"])

# Message ids are 64-bit on PostgreSQL.
MessageId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The message id.", examples=[501])]

MAX_NOTIFICATIONS = 1000

Scalar = str | int | float | bool
# A JSON object or list, or its JSON text (as a task file's cell holds it).
JsonText = dict[str, Any] | list[Any] | str


class Notification(BaseModel):
    """One notification: a recipient, a text or a template, and how to send it. The fields are the task file's
    columns (spec params.md) under snake_case names, checked exactly as a file's cells are; `params` takes
    any other column of the full list by its name."""

    model_config = ConfigDict(extra="forbid")

    phone: str | int | None = Field(default=None, description="Recipient phone (E.164, or national with the account's region).",
                                    examples=["+79161234567"])
    email: str | None = Field(default=None, description="Recipient e-mail address (email channel).", examples=["anna@example.com"])
    push_registration_id: str | None = Field(default=None, description="Device push token (push channel).", examples=["fcm:dGVzdA"])
    external_id: str | None = Field(default=None, description="The recipient's id in your system, ≤ 10240 bytes.", examples=["crm-1001"])
    template_id: int | str | None = Field(default=None, description="A stored template (GET /v1/templates); its text wins over `text`.",
                                          examples=[None])
    text: str | None = Field(default=None, description="Message text with `{name}` placeholders.", examples=["Hello {name}, your code is 1234"])
    variables: JsonText | None = Field(default=None, description="Values of the text's placeholders.", examples=[{"name": "Anna"}])
    channel: str | None = Field(default=None, description="The channel (default sms); with `channels`, the required one.", examples=["sms"])
    channels: list[str] | str | None = Field(default=None, description="Channels in the order they are tried (fallback).",
                                             examples=[["viber", "sms"]])
    required: bool | str | None = Field(default=None, description="`channel` is sent whatever the others' outcome.", examples=[None])
    send_order: str | None = Field(default=None, description="sequential (fallback, default) or parallel.", examples=[None])
    sender: str | None = Field(default=None, description="A registered sender name (the task file's `from`).", examples=[None])
    send_at: str | None = Field(default=None, description="Earliest send time; without an offset, the account's local time.",
                                examples=["2026-12-01T10:30:00+03:00"])
    allowed_time_ranges: list[list[str]] | str | None = Field(
        default=None, description="Windows in the recipient's local time; default 09:00:00–20:00:00.",
        examples=[[["09:00:00", "21:00:00"]]])
    validity_period: int | str | None = Field(default=None, description="Minutes, 1–2880; afterwards the message is EXPIRED.",
                                              examples=[60])
    priority: str | None = Field(default=None, description="high, normal (default) or low.", examples=["high"])
    use_short_links: bool | str | None = Field(default=None, description="Replace the text's URLs with tracked short links (SMS).",
                                               examples=[None])
    callback_url: str | None = Field(default=None, description="Receives each status change, ≤ 4000 bytes.",
                                     examples=["https://example.com/notiflow/status"])
    callback_data: Any = Field(default=None, description="Any JSON, passed back in the callbacks, ≤ 10240 bytes.",
                               examples=[{"order": 1001}])
    unique_message_id: str | None = Field(
        default=None, description="Your id of this notification, ≤ 10240 bytes: sent again (by this token), it creates nothing "
        "and is answered with the first one's messages.", examples=["order-1001-ready"])
    params: dict[str, Scalar | dict[str, Any] | list[Any]] | None = Field(
        default=None, description='Other columns of the full param list by name, e.g. {"platform": "Android", "subject": "Hi"}.',
        examples=[None])


# The API field of each column, and back; a column only `params` names is reported as `params.<column>`.
FIELDS = {
    "phone": "phone", "email": "email", "push_registration_id": "push registration id", "external_id": "external id",
    "template_id": "template id", "text": "text", "variables": "variables", "channel": "channel", "channels": "channels",
    "required": "required", "send_order": "send order", "sender": "from", "send_at": "send at",
    "allowed_time_ranges": "allowed time ranges", "validity_period": "validity period", "priority": "priority",
    "use_short_links": "use short links", "callback_url": "callback url", "callback_data": "callback data",
    "unique_message_id": "unique message id",
}
_FIELD_OF = {column: name for name, column in FIELDS.items()}
# Fields whose cell is JSON text: a value given as JSON goes in as its text.
_JSON_FIELDS = frozenset({"variables", "channels", "allowed_time_ranges"})


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Notification] = Field(min_length=1, max_length=MAX_NOTIFICATIONS,
                                         description=f"1 to {MAX_NOTIFICATIONS:,} notifications.")


class PlannedMessage(BaseModel):
    id: int = Field(examples=[501])
    channel: Channel = Field(examples=[Channel.SMS])
    step: int = Field(description="Its place in the notification's channel chain (0: tried first).", examples=[0])
    status: MessageStatus = Field(examples=[MessageStatus.QUEUED])
    scheduled_at: datetime | None = Field(description="When it is sent (UTC); null while it waits for a channel before it.",
                                          examples=["2026-12-01T07:30:00Z"])
    expires_at: datetime | None = Field(description="When its validity period ends unsent (EXPIRED).", examples=["2026-12-01T08:30:00Z"])
    waits_for: str | None = Field(description="The channels it falls back from, while they have not failed.", examples=[None])


class SentNotification(BaseModel):
    item: int = Field(description="Its place in the request's `messages` (0-based).", examples=[0])
    message_id: int = Field(description="The first channel's message.", examples=[501])
    task_id: int = Field(description="The API task it belongs to (one per token and day).", examples=[12])
    duplicate: bool = Field(description="Its unique message id was sent before: nothing was created.", examples=[False])
    unique_message_id: str | None = Field(examples=["order-1001-ready"])
    messages: list[PlannedMessage] = Field(description="One per channel of its chain, in order.")


class SendAnswer(BaseModel):
    messages: list[SentNotification]


class MessageSummary(BaseModel):
    id: int = Field(examples=[501])
    task_id: int = Field(examples=[12])
    row: int = Field(description="Its row in the task (file row, or the API notification's number).", examples=[3])
    step: int = Field(examples=[0])
    channel: Channel = Field(examples=[Channel.SMS])
    recipient: str = Field(examples=["+79161234567"])
    status: MessageStatus = Field(examples=[MessageStatus.DELIVERED])
    status_description: str = Field(examples=["delivered"])
    external_id: str | None = Field(examples=["crm-1001"])
    unique_message_id: str | None = Field(examples=["order-1001-ready"])
    parts: int = Field(examples=[1])
    provider: str | None = Field(examples=["sandbox"])
    created_at: datetime = Field(examples=["2026-12-01T07:29:59Z"])
    scheduled_at: datetime | None = Field(examples=["2026-12-01T07:30:00Z"])
    sent_at: datetime | None = Field(examples=["2026-12-01T07:30:01Z"])
    delivered_at: datetime | None = Field(examples=["2026-12-01T07:30:04Z"])
    expires_at: datetime | None = Field(examples=["2026-12-01T08:30:00Z"])


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.", examples=["480"])


class StatusChange(BaseModel):
    status: MessageStatus = Field(examples=[MessageStatus.SENT])
    description: str = Field(examples=["accepted by the provider"])
    source: str = Field(description="What changed it: intake, api, schedule, dispatch, poll, webhook, fallback, cancel…",
                        examples=["dispatch"])
    at: datetime = Field(examples=["2026-12-01T07:30:01Z"])


class MessageDetail(MessageSummary):
    text: str = Field(examples=["Hello Anna, your code is 1234"])
    sender: str = Field(examples=["notiflow"])
    history: list[StatusChange] = Field(description="Every status it took, oldest first.")
    chain: list[MessageSummary] = Field(description="The messages of its notification (task row), one per channel, in the order "
                                        "they are tried; it is one of them.")


class CancelAnswer(BaseModel):
    message_id: int = Field(examples=[501])
    status: MessageStatus = Field(examples=[MessageStatus.CANCELED])
    cancelled: list[int] = Field(description="It, and the later channels of its chain that were waiting for it.", examples=[[501, 502]])


def _cells(notification: Notification, item: int) -> dict[str, Any]:
    """The notification as a task-file row: column name → cell."""
    cells: dict[str, Any] = {}
    for name, value in notification.model_dump(exclude={"params"}, exclude_none=True).items():
        if name == "callback_data" or (name in _JSON_FIELDS and not isinstance(value, str)):
            value = json.dumps(value, ensure_ascii=False)
        cells[FIELDS[name]] = value
    for key, value in (notification.params or {}).items():
        column = ALIASES.get(normalise_header(key))
        where = f"body.messages[{item}].params.{key}"
        if column is None:
            raise _refused([{"field": where, "type": "unknown_column",
                             "message": "is not a column of the full param list (GET /v1/task-templates has it)"}])
        if column in cells or column in _FIELD_OF:
            raise _refused([{"field": where, "type": "use_field",
                             "message": f"give it as the field `{_FIELD_OF.get(column, column)}`, not in params"}])
        cells[column] = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
    return cells


def _refused(details: list[dict[str, str]]) -> ApiError:
    """422 naming every notification, field and reason (the reasons are the task file's)."""
    count = len({d["field"].split("]")[0] for d in details})
    first = details[0]
    return ApiError(422, "invalid_notifications",
                    f"{count} notification{'s are' if count > 1 else ' is'} not valid and nothing was sent; first: "
                    f"{first['field']} {first['message']} (details list every problem)", details=details)


def _field(item: int, column: str) -> str:
    name = _FIELD_OF.get(column)
    return f"body.messages[{item}].{name}" if name else f"body.messages[{item}].params.{column}"


def _token_id(session: Session, name: str) -> int:
    found = session.scalar(select(ApiToken.id).where(ApiToken.name == name))
    assert found is not None, f"token {name} authenticated but not found"
    return found


def _answer(results: list[Accepted]) -> dict[str, Any]:
    return SendAnswer(messages=[
        SentNotification(item=r.item, message_id=r.messages[0].id, task_id=r.task_id, duplicate=r.duplicate,
                         unique_message_id=r.unique_message_id,
                         messages=[PlannedMessage(**vars(m)) for m in r.messages])
        for r in results
    ]).model_dump(mode="json")


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@router.post(
    "", status_code=201, response_model=SendAnswer, summary="Send notifications",
    responses=documented(413, 422),
    openapi_extra={"requestBody": {"content": {"application/json": {"example": {"messages": [
        {"phone": "+79161234567", "text": "Hello {name}, your code is 1234", "variables": {"name": "Anna"},
         "unique_message_id": "order-1001-code", "validity_period": 60},
    ]}}}}},
)
def send_messages(
    body: SendRequest, request: Request,
    idempotency_key: Annotated[str | None, Header(description="Any text of up to 255 printable characters: the same key again "
                                                  "(with the same body, by this token) gets the first answer and creates nothing.")] = None,
) -> Any:
    """Send 1 to 1,000 notifications: each is checked as a task-file row is (every problem of every notification is
    answered at once, 422, and nothing is sent), stored in the token's API task of the day and scheduled in its
    windows; the answer has each one's messages and when they go out. A running `notiflow server` sends them within
    seconds."""
    name: str = request.state.token_name
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ApiError(422, "invalid_idempotency_key", "the Idempotency-Key header must be 1 to 255 printable ASCII characters, no spaces")
    request_hash = hashlib.sha256(json_text(body.model_dump(mode="json", exclude_none=True)).encode()).hexdigest()
    with session_scope() as session:
        token_id = _token_id(session, name)
    if idempotency_key is not None and (replay := _replay(token_id, idempotency_key, request_hash)) is not None:
        return replay
    notifications = [_cells(n, item) for item, n in enumerate(body.messages)]

    def remember(session: Session, results: list[Accepted]) -> None:
        if idempotency_key is not None:
            session.add(ApiRequest(api_token_id=token_id, key=idempotency_key, request_hash=request_hash, status_code=201,
                                   response=json_text(_answer(results))))
            session.flush()

    try:
        results = accept_notifications(token_id, name, notifications, remember)
    except NotificationsRefused as refused:
        raise _refused([{"field": _field(item, error.column), "message": error.reason, "type": error.code}
                        for item, error in refused.problems]) from refused
    except IntegrityError:
        # The same key at the same moment: the other request stored its answer first, and ours rolled back.
        if idempotency_key is not None and (replay := _replay(token_id, idempotency_key, request_hash)) is not None:
            return replay
        raise
    return JSONResponse(_answer(results), status_code=201)


def _replay(token_id: int, key: str, request_hash: str) -> JSONResponse | None:
    with session_scope() as session:
        stored = session.execute(
            select(ApiRequest.request_hash, ApiRequest.status_code, ApiRequest.response)
            .where(ApiRequest.api_token_id == token_id, ApiRequest.key == key)
        ).first()
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with another request body; "
                       "use a new key for a new request (a retry must send the same body)")
    return JSONResponse(json.loads(stored.response), status_code=stored.status_code, headers={"Idempotent-Replayed": "true"})


_SUMMARY = (Message.id, Message.task_id, Message.row, Message.step, Message.channel, Message.recipient, Message.status,
            Message.status_description, Message.external_id, Message.unique_message_id, Message.parts, Message.provider,
            Message.created_at, Message.scheduled_at, Message.sent_at, Message.delivered_at, Message.expires_at)


def _summary(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in _SUMMARY}


@router.get("", response_model=MessagePage, summary="List messages", responses=documented(422))
def list_messages(
    since: Annotated[datetime | None, Query(description="Created at or after this time (ISO 8601; without an offset, UTC).")] = None,
    until: Annotated[datetime | None, Query(description="Created before this time.")] = None,
    channel: Annotated[Channel | None, Query(description="Only this channel.")] = None,
    status: Annotated[MessageStatus | None, Query(description="Exactly this status.")] = None,
    group: Annotated[HistoryGroup | None, Query(description="A group of the history list (spec §5).")] = None,
    phone: Annotated[PlainText | None, Query(max_length=64, description="Recipients whose number contains these digits.")] = None,
    task_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this notification task.")] = None,
    external_id: Annotated[PlainText | None, Query(max_length=10240, description="Exactly this external id.")] = None,
    unique_message_id: Annotated[PlainText | None, Query(max_length=10240, description="Exactly this unique message id.")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$", description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Messages per page.")] = 100,
) -> dict[str, Any]:
    """Messages newest first, filtered as the history list filters them, a page at a time."""
    query = select(*_SUMMARY)
    if since is not None:
        query = query.where(Message.created_at >= _aware(since))
    if until is not None:
        query = query.where(Message.created_at < _aware(until))
    if channel is not None:
        query = query.where(Message.channel == channel.value)
    if status is not None:
        query = query.where(Message.status == status.value)
    if group is not None and group is not HistoryGroup.ALL:
        query = query.where(in_group(group))
    if phone is not None:
        digits = re.sub(r"\D", "", phone)
        if not digits:
            raise ApiError(422, "invalid_request", f"phone {phone!r} has no digits; give part of a number, e.g. 912345")
        query = query.where(Message.recipient.contains(digits))
    if task_id is not None:
        query = query.where(Message.task_id == task_id)
    if external_id is not None:
        query = query.where(Message.external_id == external_id)
    if unique_message_id is not None:
        query = query.where(Message.unique_message_id == unique_message_id)
    if cursor is not None:
        query = query.where(Message.id < min(int(cursor), 2**63 - 1))
    with session_scope() as session:
        rows = session.execute(query.order_by(Message.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    return {"items": [_summary(r) for r in page], "next_cursor": str(page[-1].id) if len(rows) > limit else None}


def _aware(moment: datetime) -> datetime:
    """The moment in UTC (naive: UTC already); one that UTC cannot hold (year 1 at +05:00) is the client's mistake."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as exc:
        raise ApiError(422, "invalid_request", f"{moment.isoformat()} is out of range in UTC; give a time between the years 1 and 9999") from exc


def _not_found(message_id: int) -> ApiError:
    return ApiError(404, "not_found", f"message {message_id} does not exist; GET /v1/messages lists them")


@router.get("/{message_id}", response_model=MessageDetail, summary="Show a message", responses=documented(404, 422))
def read_message(message_id: MessageId) -> dict[str, Any]:
    """A message with every status it took (oldest first) and its notification's channel chain (fallback)."""
    with session_scope() as session:
        found = session.execute(select(*_SUMMARY, Message.text, Message.sender).where(Message.id == message_id)).first()
        if found is None:
            raise _not_found(message_id)
        history = session.execute(
            select(StatusEvent.status, StatusEvent.description, StatusEvent.source, StatusEvent.at)
            .where(StatusEvent.message_id == message_id).order_by(StatusEvent.id)
        ).all()
        chain = session.execute(
            select(*_SUMMARY).where(Message.task_id == found.task_id, Message.row == found.row).order_by(Message.step, Message.id)
        ).all()
    return _summary(found) | {"text": found.text, "sender": found.sender, "history": [h._asdict() for h in history],
                              "chain": [_summary(m) for m in chain]}


@router.post("/{message_id}/cancel", response_model=CancelAnswer, summary="Cancel a message", responses=documented(404, 409, 422))
def cancel(message_id: MessageId) -> CancelAnswer:
    """Cancel a message that is CREATED, DELAYED or PAUSED (and the later channels of its chain waiting for it): it
    becomes CANCELED and is never sent. A message queued or handed to a provider cannot be recalled (409)."""
    outcome = cancel_message(message_id, "cancelled through the API before sending")
    if outcome is None:
        raise _not_found(message_id)
    status, cancelled = outcome
    if not cancelled:
        allowed = ", ".join(s.value for s in MESSAGE_CANCELABLE)
        raise ApiError(409, "message_not_cancelable",
                       f"message {message_id} is {status.value}: only a {allowed} message can be cancelled; one queued for "
                       "sending or handed to a provider cannot be recalled")
    return CancelAnswer(message_id=message_id, status=status, cancelled=cancelled)


