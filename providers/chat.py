"""Chat through the customer's bot platform (kind "chat"): one signed JSON webhook a message.

The account: `url` is the platform's endpoint that starts or continues an operator chat session and posts
the message into it; `password` is the secret both sides share: each request carries
`X-Notiflow-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>` (the scheme of our customer
callbacks), so the platform can refuse anything we did not send. `options` below.

The request (spec params.md, the chat columns of the row):

    POST <url>
    {"ref": "<our idempotency key>", "chat_id": "...", "main_chat_id": "...", "bot_id": "...",
     "messenger_type": "whatsapp", "session_id": "...", "session_name": "...", "continue_session": true,
     "sender": "...", "text": "...", "template_name": "...", "button": {...}}

The chat id is the message's recipient (a chat row's `chat id`). A row without `bot id`, `chat session name`
or `continue last or start new session` is refused before any request, naming the missing column.

Answers and what they become:

| answer                                  | becomes                               | reason recorded                       |
|-----------------------------------------|---------------------------------------|---------------------------------------|
| 2xx (JSON `id` or `session_id` if any)  | SENT (that id, else our ref)          | accepted by the provider              |
| 401, 403                                | login refused                         | the platform refused our signature    |
| 409, 422 and other 4xx                  | refused → ERROR                       | the platform's `error` or `message`   |
| 429 (Retry-After)                       | ProviderUnavailable(retry_after)      | (tried again then, no attempt spent)  |
| 5xx, no connection; a timeout           | ProviderUnavailable; timeout: outcome unknown | (tried again; the ref lets the platform drop a repeat) |

The platform reports nothing back here (Reports.NONE): a message it took ends SENT.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any, Self

import httpx
from pydantic import Field

from models.settings import Settings
from models.status import Channel
from providers.account_options import AccountOptions, ProviderAccountError, read_options, secret
from providers.base import Acceptance, Capabilities, OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.per_message import Outcome, PerMessageProvider, as_mapping, json_object

# The row's columns the platform needs (params.md: "req (chat)"), and the body fields they fill. The chat id is
# the message's recipient (intake takes a chat row's address from its `chat id`).
REQUIRED = {"bot id": "bot_id", "chat session name": "session_name"}
OPTIONAL = {"main chat id": "main_chat_id", "messenger type": "messenger_type", "chat session id": "session_id",
            "template name": "template_name", "button": "button"}
CONTINUE = "continue last or start new session"
DEFAULT_RETRY_AFTER = 1.0


class ChatOptions(AccountOptions):
    """Options of a chat account."""

    in_flight: int = Field(default=4, ge=1, le=32, description="Requests at once.")
    per_second: float | None = Field(default=None, gt=0, description="Messages a second, when the platform names a limit.")
    timeout: float = Field(default=10.0, gt=0, le=60)


class ChatWebhook(PerMessageProvider):
    """The customer's bot platform, reached by a signed webhook a message."""

    kind = "chat"
    capabilities = Capabilities(
        channels=frozenset({Channel.CHAT}),
        batch_size=100,
        in_flight=1,  # the adapter spreads a batch over its own requests
        reports=Reports.NONE,
        lookup=False,
    )

    def __init__(self, name: str, url: str, signing_secret: str, *, options: ChatOptions | None = None,
                 transport: httpx.BaseTransport | None = None):
        options = options or ChatOptions()
        super().__init__(name, url, requests_in_flight=options.in_flight, timeout=options.timeout, transport=transport)
        self._secret = signing_secret.encode()
        self._url = url  # posted to as it is: a base URL would get a trailing slash
        self.options = options
        if options.per_second:
            self.capabilities = replace(type(self).capabilities, per_second=options.per_second)  # type: ignore[misc]

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        if not account.url:
            raise ProviderAccountError(f"chat account {name!r} has no url: set the bot platform's webhook address (https://…)")
        options = read_options(cls.kind, name, ChatOptions, account.options)
        signing = secret(cls.kind, name, account, "the secret the bot platform checks our signature with")
        return cls(name, account.url, signing, options=options)

    def _refusal(self, message: OutgoingMessage) -> str | None:
        missing = [column for column in [*REQUIRED, CONTINUE] if message.params.get(column) in (None, "")]
        if missing:
            return f"a chat message needs the column(s) {', '.join(repr(c) for c in missing)}; add them to the row"
        return super()._refusal(message)

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        body: dict[str, Any] = {"ref": message.ref, "chat_id": str(message.params.get("chat id") or message.recipient),
                                "text": message.text, "sender": message.sender,
                                "continue_session": _flag(message.params.get(CONTINUE))}
        for column, field in {**REQUIRED, **OPTIONAL}.items():
            value = message.params.get(column)
            if value not in (None, ""):
                body[field] = value if field == "button" else str(value)
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        stamp = str(int(time.time()))
        signature = hmac.new(self._secret, stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        try:
            response = self._exchange("POST", self._url, content=raw, headers={
                "Content-Type": "application/json", "X-Notiflow-Signature": f"t={stamp},v1={signature}"})
        except ProviderUnavailable as fault:
            return Outcome(fault=fault)
        return self._outcome(message, response)

    def _outcome(self, message: OutgoingMessage, response: httpx.Response) -> Outcome:
        code = response.status_code
        answer = json_object(response)
        said = str(answer.get("error") or as_mapping(answer.get("error")).get("message") or answer.get("message") or "")
        if code == 429:
            wait = response.headers.get("Retry-After")
            return Outcome(fault=ProviderUnavailable(f"{self.name}: the bot platform asked to slow down",
                                                     retry_after=float(wait) if wait and wait.isdigit() else DEFAULT_RETRY_AFTER))
        if code >= 500:
            return Outcome(fault=ProviderUnavailable(f"{self.name}: the bot platform answered HTTP {code}: {said or response.text[:200]}"))
        if code in (401, 403):
            return Outcome(refused_login=ProviderRejected(
                f"{self.name}: the bot platform refused our signature (HTTP {code}); set the secret it expects as the account's password"))
        if 200 <= code < 300:
            provider_id = answer.get("id") or answer.get("session_id") or message.ref
            return Outcome(Acceptance(ref=message.ref, provider_message_id=str(provider_id)[:128]))
        return Outcome(Acceptance(ref=message.ref, provider_message_id=None,
                                  error=f"the bot platform refused it (HTTP {code}): {said or 'no reason given'}"[:300]))


def _flag(value: Any) -> bool:
    """`continue last or start new session` as the row gave it: true continues the last session."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "y", "on", "да")
