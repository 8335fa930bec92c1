"""Viber through its REST Bot API (kind "viber"): `send_message` one message a request, delivery and "seen" callbacks.

The account: `password` is the bot's authentication token (X-Viber-Auth-Token), `url` the API (default
https://chatapi.viber.com/pa), `sender` the sender name shown (≤ 28 characters) when a message names none,
`options` below. The bot's webhook (set once with `set_webhook`) is this instance's /dlr/{instance}?secret=…,
with event types delivered, seen and failed.

A message carries its text; an image (the `image url` param, else `media url`, else the `message preview`'s
image_url) makes it a picture message with the text as its caption; `button text` and `button url` (or the
`button` JSON) add an open-url button. The receiver is the `chat id` param, else the recipient: a Viber user
id (as the bot's subscribers have), never a phone number.

`send_message` answers HTTP 200 with `status` (0 is ok) and `message_token`:

| status | name                        | becomes                          | reason recorded                           |
|--------|-----------------------------|----------------------------------|-------------------------------------------|
| 0      | ok                          | SENT (id: message_token)         | accepted by the provider                  |
| 5      | receiverNotRegistered       | refused → ERROR                  | the receiver is not a Viber user          |
| 6      | receiverNotSubscribed       | refused → ERROR                  | the receiver has not subscribed to the bot |
| 11     | receiverNoSuitableDevice    | refused → ERROR                  | the receiver's Viber cannot show it       |
| 13, 14 | apiVersionNotSupported, …   | refused → ERROR                  | the receiver's Viber is too old for it    |
| 1, 3, 4| invalidUrl, badData, missingData | refused → ERROR             | Viber's status_message                    |
| 12     | tooManyRequests             | ProviderUnavailable (retry after options.retry_after) | —                    |
| 2, 7, 8, 9, 15 | invalidAuthToken, account blocked/not found/suspended/not authorized | login refused | — |
| HTTP 5xx, no connection; timeout | —                 | ProviderUnavailable; outcome unknown | —                                 |

Callbacks (`event`, `message_token`, `timestamp` in ms):

| event      | status      | reason                       |
|------------|-------------|------------------------------|
| delivered  | DELIVERED   | delivered to the device      |
| seen       | READ        | seen by the user             |
| failed     | UNDELIVERED | Viber's `desc`               |
| others (subscribed, message, webhook …) | — (not delivery reports; answered so Viber keeps the webhook) | |

Quirks: every answer is HTTP 200, the outcome is in `status`; message_token is a 64-bit number (kept as text).
Viber publishes no per-second limit for send_message, only status 12: options.per_second paces when the
account's contract names one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self

import httpx
from pydantic import Field

from models.settings import Settings
from models.status import Channel, MessageStatus
from providers.account_options import AccountOptions, endpoint, read_options, secret
from providers.base import Acceptance, Capabilities, OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports, StatusReport
from providers.per_message import Outcome, PerMessageProvider, as_mapping, json_object

DEFAULT_URL = "https://chatapi.viber.com/pa"
TEXT_LIMIT = 7000
CAPTION_LIMIT = 768
SENDER_LIMIT = 28

# Statuses of a send that refuse that one message → the reason recorded.
REFUSALS: dict[int, str] = {
    1: "an URL in the message is not valid (invalidUrl)",
    3: "Viber could not read the message (badData)",
    4: "the message lacks a field Viber needs (missingData)",
    5: "the receiver is not a Viber user (receiverNotRegistered)",
    6: "the receiver has not subscribed to the bot (receiverNotSubscribed)",
    11: "the receiver's device or Viber version cannot receive bot messages (receiverNoSuitableDevice)",
    13: "the receiver's Viber is too old for this message (apiVersionNotSupported)",
    14: "the message's fields need a newer Viber (incompatibleWithVersion)",
}
# Statuses that mean the account cannot send at all.
LOGIN_REFUSALS: dict[int, str] = {
    2: "the auth token is not valid (invalidAuthToken)",
    7: "the bot account is blocked (publicAccountBlocked)",
    8: "the token belongs to no bot account (publicAccountNotFound)",
    9: "the bot account is suspended (publicAccountSuspended)",
    15: "the bot account is not authorized (publicAccountNotAuthorized)",
}
TOO_MANY_REQUESTS = 12
# Callback events that are delivery reports → our status.
EVENTS: dict[str, MessageStatus] = {
    "delivered": MessageStatus.DELIVERED,
    "seen": MessageStatus.READ,
    "failed": MessageStatus.UNDELIVERED,
}


class ViberOptions(AccountOptions):
    """Options of a viber account."""

    avatar: str | None = Field(default=None, description="The sender's avatar URL.")
    min_api_version: int = Field(default=1, ge=1, le=20, description="Oldest Viber API version a receiver must have.")
    in_flight: int = Field(default=8, ge=1, le=32, description="Requests at once.")
    per_second: float | None = Field(default=None, gt=0, description="Messages a second, when the account's contract names a limit.")
    retry_after: float = Field(default=1.0, gt=0, le=600, description="Seconds to hold the bot after tooManyRequests.")
    timeout: float = Field(default=10.0, gt=0, le=60)


class ViberBot(PerMessageProvider):
    """One Viber bot account."""

    kind = "viber"
    capabilities = Capabilities(
        channels=frozenset({Channel.VIBER}),
        batch_size=100,
        in_flight=1,  # the adapter spreads a batch over its own requests
        max_text_chars=TEXT_LIMIT,
        reports=Reports.PUSH,
        lookup=False,
    )

    def __init__(self, name: str, token: str, *, base_url: str = DEFAULT_URL, sender: str = "",
                 options: ViberOptions | None = None, transport: httpx.BaseTransport | None = None):
        options = options or ViberOptions()
        super().__init__(name, base_url.rstrip("/") + "/", requests_in_flight=options.in_flight, timeout=options.timeout,
                         transport=transport)
        self._token = token
        self.sender = sender
        self.options = options
        self.capabilities = replace(type(self).capabilities, per_second=options.per_second)  # type: ignore[misc]

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        options = read_options(cls.kind, name, ViberOptions, account.options)
        token = secret(cls.kind, name, account, "the bot's authentication token (X-Viber-Auth-Token)")
        return cls(name, token, base_url=endpoint(cls.kind, name, account, DEFAULT_URL), sender=account.sender or "",
                   options=options)

    def _refusal(self, message: OutgoingMessage) -> str | None:
        sender = message.sender or self.sender
        if not sender:
            return "no sender name: Viber shows one with every message; set the message's `from` or the account's sender"
        if len(sender) > SENDER_LIMIT:
            return f"the sender name {sender!r} is longer than the {SENDER_LIMIT} characters Viber shows"
        if _receiver(message) is None:
            return (f"{message.recipient!r} is not a Viber user id: the Bot API sends to its subscribers' user ids, "
                    "never to a phone number; give the message's chat id")
        if not message.text.strip() and _image(message) is None:
            return "the text is empty and there is no image: Viber sends no empty message"
        if _image(message) is not None and len(message.text) > CAPTION_LIMIT:
            return f"the caption of a picture message has {len(message.text):,} characters, more than the {CAPTION_LIMIT} Viber takes"
        return super()._refusal(message)

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        try:
            response = self._exchange("POST", "send_message", headers={"X-Viber-Auth-Token": self._token},
                                      json=self._body(message))
        except ProviderUnavailable as fault:
            return Outcome(fault=fault)
        if response.status_code >= 500 or response.status_code == 429:
            return Outcome(fault=ProviderUnavailable(f"{self.name}: Viber answered HTTP {response.status_code}",
                                                     retry_after=self.options.retry_after if response.status_code == 429 else None))
        answer = json_object(response)
        status = answer.get("status")
        described = f"{answer.get('status_message') or 'no status_message'}"
        if response.status_code == 200 and status == 0 and answer.get("message_token") is not None:
            return Outcome(Acceptance(ref=message.ref, provider_message_id=str(answer["message_token"])))
        if status == TOO_MANY_REQUESTS:
            return Outcome(fault=ProviderUnavailable(f"{self.name}: Viber throttled the bot (tooManyRequests)",
                                                     retry_after=self.options.retry_after))
        if isinstance(status, int) and status in LOGIN_REFUSALS:
            return Outcome(refused_login=ProviderRejected(
                f"{self.name}: Viber refused the account: {LOGIN_REFUSALS[status]}; check the token in its password"))
        reason = REFUSALS.get(status) if isinstance(status, int) else None
        return Outcome(Acceptance(ref=message.ref, provider_message_id=None,
                                  error=reason or f"Viber refused it (HTTP {response.status_code}, status {status}: {described})"[:300]))

    def _body(self, message: OutgoingMessage) -> dict[str, Any]:
        sender: dict[str, str] = {"name": message.sender or self.sender}
        if self.options.avatar:
            sender["avatar"] = self.options.avatar
        body: dict[str, Any] = {"receiver": _receiver(message), "min_api_version": self.options.min_api_version,
                                "sender": sender, "tracking_data": message.ref}
        image = _image(message)
        if image is not None:
            body.update(type="picture", text=message.text, media=image)
        else:
            body.update(type="text", text=message.text)
        button = _button(message)
        if button is not None:
            body["keyboard"] = {"Type": "keyboard", "DefaultHeight": False, "Buttons": [
                {"ActionType": "open-url", "ActionBody": button[1], "Text": button[0]}]}
        return body

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        """A Viber callback: delivered, seen or failed become a report; its other events are no reports (answered empty)."""
        if not isinstance(payload, Mapping) or not isinstance(payload.get("event"), str):
            raise ValueError("a Viber callback is a JSON object with an event")
        status = EVENTS.get(payload["event"])
        if status is None:
            return []
        token = payload.get("message_token")
        if token is None:
            raise ValueError(f"a Viber {payload['event']} callback has no message_token")
        description = {"delivered": "delivered to the device", "seen": "seen by the user"}.get(
            payload["event"], f"not delivered: {payload.get('desc') or 'Viber gave no reason'}")
        return [StatusReport(provider_message_id=str(token), status=status, description=description[:300],
                             at=_at(payload.get("timestamp")))]


def _receiver(message: OutgoingMessage) -> str | None:
    receiver = str(message.params.get("chat id") or message.recipient).strip()
    if not receiver or receiver.startswith("+") or receiver.isdigit():
        return None
    return receiver


def _image(message: OutgoingMessage) -> str | None:
    preview = message.params.get("message preview")
    preview_image = preview.get("image_url") if isinstance(preview, Mapping) else None
    image = message.params.get("image url") or message.params.get("media url") or preview_image
    return str(image) if image else None


def _button(message: OutgoingMessage) -> tuple[str, str] | None:
    button = as_mapping(message.params.get("button"))
    text = message.params.get("button text") or button.get("text")
    url = message.params.get("button url") or button.get("url")
    return (str(text), str(url)) if text and url else None


def _at(timestamp: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(timestamp) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)
