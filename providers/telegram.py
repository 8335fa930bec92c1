"""Telegram through the Bot API's `sendMessage` (kind "telegram"): one message a request, to a chat id.

The account: `password` is the bot token (from @BotFather), `url` the Bot API server (default
https://api.telegram.org; a local Bot API server or a stand-in works the same), `options` below.
The chat is the message's `chat id` param when it has one, else its recipient, which must then be a chat id
(a number, negative for groups) or a public @channelname: the Bot API cannot send to a phone number.

Answers (`{"ok": false, "error_code": …, "description": …, "parameters": …}`) and what they become:

| answer                                                      | becomes                       | reason recorded                         |
|-------------------------------------------------------------|-------------------------------|-----------------------------------------|
| 200 `ok: true`                                              | SENT (id `chat:message_id`)   | accepted by the provider                |
| 403 `bot can't initiate conversation with a user`           | refused → ERROR               | chat not started: user never sent /start |
| 400 `chat not found`                                        | refused → ERROR               | chat not found (never started the bot, or a wrong chat id) |
| 403 `bot was blocked by the user`                           | refused → ERROR               | the user blocked the bot                |
| 403 `user is deactivated`                                   | refused → ERROR               | the user's account is deleted           |
| 403 `bot was kicked from …` / `bot is not a member of …`    | refused → ERROR               | the bot is not in that group/channel    |
| 400 with `parameters.migrate_to_chat_id`                    | refused → ERROR               | the group became a supergroup: its new chat id |
| another 400                                                 | refused → ERROR               | Telegram's description                  |
| 429 `parameters.retry_after`                                | ProviderUnavailable(retry_after) | (tried again after that many seconds, no attempt spent) |
| 401, 404 (the token is wrong: the path does not exist)      | login refused                 | the bot token is refused                |
| 5xx, no connection; a timeout                               | ProviderUnavailable; outcome unknown | (tried again; the Bot API has no client reference, so a timed-out message may arrive twice) |

Quirks: Telegram tells a bot nothing after `sendMessage` (no delivery or read receipts), so an accepted
message ends SENT (Reports.NONE); a refusal is recorded as ERROR with the reason, which lets the
cascade move on to the next channel. Limits (core.telegram.org/bots/faq): about 30 messages a second
across chats, 1 a second in one chat, 20 a minute in one group; texts up to 4,096 characters.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal, Self

import httpx
from pydantic import Field

from models.settings import Settings
from models.status import Channel
from providers.account_options import AccountOptions, endpoint, read_options, secret
from providers.base import Acceptance, Capabilities, OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.per_message import Outcome, PerMessageProvider, as_mapping, json_object

DEFAULT_URL = "https://api.telegram.org"
TEXT_LIMIT = 4096
# A 429 that names no retry_after holds the bot this long.
DEFAULT_RETRY_AFTER = 1.0
_CHAT_ID = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")

# Telegram's descriptions (lower case, without the "Forbidden: "/"Bad Request: " prefix) → the reason we record.
REASONS: dict[str, str] = {
    "bot can't initiate conversation with a user": "chat not started: the user has never started the bot (/start)",
    "chat not found": "chat not found: the user has never started the bot (/start), or the chat id is wrong",
    "bot was blocked by the user": "the user blocked the bot",
    "user is deactivated": "the user's Telegram account is deleted",
    "bot was kicked from the group chat": "the bot was removed from the group",
    "bot was kicked from the supergroup chat": "the bot was removed from the group",
    "bot is not a member of the channel chat": "the bot is not a member of the channel",
    "bot is not a member of the supergroup chat": "the bot is not a member of the group",
    "message is too long": f"the text is longer than the {TEXT_LIMIT:,} characters Telegram takes",
    "message text is empty": "the text is empty",
}


class TelegramOptions(AccountOptions):
    """Options of a telegram account."""

    parse_mode: Literal["HTML", "MarkdownV2", "Markdown"] | None = Field(
        default=None, description="How Telegram reads the text's markup; none: plain text.")
    disable_notification: bool = Field(default=False, description="Deliver silently.")
    in_flight: int = Field(default=8, ge=1, le=32, description="Requests at once.")
    per_second: float = Field(default=30.0, gt=0, le=1000, description="Messages a second (Telegram's broadcast limit is about 30).")
    timeout: float = Field(default=10.0, gt=0, le=60)


class TelegramBot(PerMessageProvider):
    """One Telegram bot: its token, its Bot API server."""

    kind = "telegram"
    capabilities = Capabilities(
        channels=frozenset({Channel.TELEGRAM}),
        batch_size=30,
        in_flight=1,  # the adapter spreads a batch over its own requests
        per_second=30.0,
        max_text_chars=TEXT_LIMIT,
        reports=Reports.NONE,
        lookup=False,
    )

    def __init__(self, name: str, token: str, *, base_url: str = DEFAULT_URL, options: TelegramOptions | None = None,
                 transport: httpx.BaseTransport | None = None):
        options = options or TelegramOptions()
        super().__init__(name, base_url, requests_in_flight=options.in_flight, timeout=options.timeout, transport=transport)
        self._token = token
        self.options = options
        self.capabilities = replace(type(self).capabilities, per_second=options.per_second,  # type: ignore[misc]
                                    batch_size=max(1, min(100, round(options.per_second))))

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        options = read_options(cls.kind, name, TelegramOptions, account.options)
        token = secret(cls.kind, name, account, "the bot token @BotFather gave (123456:ABC-…)")
        return cls(name, token, base_url=endpoint(cls.kind, name, account, DEFAULT_URL), options=options)

    def _refusal(self, message: OutgoingMessage) -> str | None:
        if not message.text.strip():
            return "the text is empty: Telegram sends no empty message"
        if _chat_id(message) is None:
            return (f"{message.recipient!r} is not a Telegram chat id: the Bot API sends to a chat id (a number, or "
                    "@channelname), never to a phone number; give the message's chat id (the user must have started the bot)")
        return super()._refusal(message)

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        chat_id = _chat_id(message)
        assert chat_id is not None
        body: dict[str, Any] = {"chat_id": chat_id, "text": message.text}
        if self.options.parse_mode:
            body["parse_mode"] = self.options.parse_mode
        if self.options.disable_notification:
            body["disable_notification"] = True
        button = _button(message)
        if button:
            body["reply_markup"] = {"inline_keyboard": [[button]]}
        try:
            response = self._exchange("POST", f"/bot{self._token}/sendMessage", shown_path="/bot…/sendMessage", json=body)
        except ProviderUnavailable as fault:
            return Outcome(fault=fault)
        return self._outcome(message, chat_id, response)

    def _outcome(self, message: OutgoingMessage, chat_id: str, response: httpx.Response) -> Outcome:
        answer = json_object(response)
        code = response.status_code
        description = str(answer.get("description") or "")
        parameters = as_mapping(answer.get("parameters"))
        if code == 429:
            wait = parameters.get("retry_after") or response.headers.get("Retry-After")
            return Outcome(fault=ProviderUnavailable(
                f"{self.name}: Telegram throttled the bot ({description or 'HTTP 429'})",
                retry_after=float(wait) if wait else DEFAULT_RETRY_AFTER))
        if code >= 500:
            return Outcome(fault=ProviderUnavailable(f"{self.name}: Telegram answered HTTP {code}: {description or response.text[:200]}"))
        if code in (401, 404):
            return Outcome(refused_login=ProviderRejected(
                f"{self.name}: Telegram refused the bot token (HTTP {code} {description}); set the token @BotFather gave "
                "in the account's password"))
        result = answer.get("result")
        if code == 200 and answer.get("ok") is True and isinstance(result, dict) and "message_id" in result:
            return Outcome(Acceptance(ref=message.ref, provider_message_id=f"{chat_id}:{result['message_id']}"))
        return Outcome(Acceptance(ref=message.ref, provider_message_id=None, error=_reason(code, description, parameters)))


def _chat_id(message: OutgoingMessage) -> str | None:
    """The chat to send to: the `chat id` param, else the recipient, when it is a chat id."""
    chat = str(message.params.get("chat id") or message.recipient).strip()
    return chat if _CHAT_ID.fullmatch(chat) else None


def _button(message: OutgoingMessage) -> dict[str, str] | None:
    """An inline URL button from the `button text` and `button url` params (or the `button` JSON)."""
    button = as_mapping(message.params.get("button"))
    text = message.params.get("button text") or button.get("text")
    url = message.params.get("button url") or button.get("url")
    return {"text": str(text), "url": str(url)} if text and url else None


def _reason(code: int, description: str, parameters: Mapping[str, Any]) -> str:
    if parameters.get("migrate_to_chat_id"):
        return f"the group became a supergroup: send to its new chat id {parameters['migrate_to_chat_id']}"
    words = description.partition(": ")[2] if ": " in description else description
    known = REASONS.get(words.strip().lower())
    if known:
        return known
    return f"Telegram refused it (HTTP {code}): {description or 'no description'}"[:300]
