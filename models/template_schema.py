"""Templates as pydantic models (spec §1): one configuration per channel, checked before a template is stored.

Sending windows are checked here too, with the same grammar as `tasks.schedule.windows.parse_windows`
("HH:MM-HH:MM", seconds optional, 24:00 ends a day, ranges must not overlap), because `models/`
imports nothing else of notiflow; an empty list means "use the notification task's windows".
Whether a sender is registered needs the database, so `tasks.compose.templates` checks that.
"""
from __future__ import annotations

import itertools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

LIFETIME_RANGE = (1, 2880)
DEFAULT_LIFETIME = 1440
BUTTON_TEXT_LIMIT = 20
SENDER_LIMIT = 64
NAME_LIMIT = 255

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*-\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})?$")


class Messenger(StrEnum):
    """Messengers a chat channel can open a session in (spec §1, Chat)."""

    WHATSAPP = "whatsapp"
    VIBER = "viber"
    FACEBOOK = "facebook"
    TELEGRAM = "telegram"
    SKYPE = "skype"
    SLACK = "slack"
    ALICE = "alice"
    IMESSAGE = "imessage"


def _lifetime(value: int) -> int:
    low, high = LIFETIME_RANGE
    if not low <= value <= high:
        raise PydanticCustomError("lifetime_range", "{value} is outside {low}–{high} minutes", {"value": value, "low": low, "high": high})
    return value


def _required(value: str) -> str:
    value = value.strip()
    if not value:
        raise PydanticCustomError("empty", "is empty; give a value")
    return value


def _sender(value: str) -> str:
    value = _required(value)
    if len(value) > SENDER_LIMIT:
        raise PydanticCustomError("sender_length", "'{value}' is longer than {limit} characters", {"value": value, "limit": SENDER_LIMIT})
    return value


def _http_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError("http_url", "'{value}' is not an http(s) URL such as https://example.com/picture.png", {"value": value})
    return value


def _button_text(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > BUTTON_TEXT_LIMIT:
        raise PydanticCustomError(
            "button_text_length", "'{value}' has {length} characters; at most {limit} are allowed",
            {"value": value, "length": len(value), "limit": BUTTON_TEXT_LIMIT},
        )
    return value


def _language(value: str) -> str:
    value = _required(value)
    if not _LANGUAGE.match(value):
        raise PydanticCustomError("language", "'{value}' is not a language code such as en, ru or pt_BR", {"value": value})
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Text = Annotated[str, AfterValidator(_required), Field(description="Message text; {name} placeholders are filled from the variables.")]
SenderName = Annotated[str, AfterValidator(_sender), Field(description="A sender name registered for this channel.")]
Lifetime = Annotated[
    int,
    AfterValidator(_lifetime),
    Field(description="Sending lifetime in minutes (1–2880); a message not delivered by then is EXPIRED.",
          json_schema_extra={"minimum": LIFETIME_RANGE[0], "maximum": LIFETIME_RANGE[1]}),
]
HttpUrl = Annotated[str | None, AfterValidator(_http_url), Field(description="An http(s) URL.")]
Required = Annotated[str, AfterValidator(_required)]


class _ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SMSConfig(_ChannelConfig):
    """SMS: text, sender name, sending lifetime."""

    channel: Literal["sms"] = "sms"
    text: Text
    sender: SenderName
    lifetime_minutes: Lifetime = DEFAULT_LIFETIME


class EmailConfig(_ChannelConfig):
    """E-mail: text, sender, sending lifetime."""

    channel: Literal["email"] = "email"
    text: Text
    sender: SenderName
    lifetime_minutes: Lifetime = DEFAULT_LIFETIME


class PushConfig(_ChannelConfig):
    """Push: text, sender, sending lifetime."""

    channel: Literal["push"] = "push"
    text: Text
    sender: SenderName
    lifetime_minutes: Lifetime = DEFAULT_LIFETIME


class ViberConfig(_ChannelConfig):
    """Viber: text, sender, image, a button (URL and text together), sending lifetime."""

    channel: Literal["viber"] = "viber"
    text: Text
    sender: SenderName
    image_url: HttpUrl = None
    button_url: HttpUrl = None
    button_text: Annotated[str | None, AfterValidator(_button_text),
                           Field(description=f"Button caption, at most {BUTTON_TEXT_LIMIT} characters.")] = None
    lifetime_minutes: Lifetime = DEFAULT_LIFETIME

    @model_validator(mode="after")
    def _button_needs_url_and_text(self) -> ViberConfig:
        if (self.button_url is None) != (self.button_text is None):
            missing = "button_text" if self.button_text is None else "button_url"
            raise PydanticCustomError("button", "a button needs both button_url and button_text; {missing} is missing", {"missing": missing})
        return self


class WhatsAppConfig(_ChannelConfig):
    """WhatsApp: sender, the registered template (name, namespace, data, language), media URL."""

    channel: Literal["whatsapp"] = "whatsapp"
    sender: SenderName
    template_name: Annotated[Required, Field(description="The template's name as registered with WhatsApp.")]
    template_namespace: Annotated[Required, Field(description="The WhatsApp Business namespace.")]
    template_data: str = Field(default="", description="Template variables, as text.")
    language: Annotated[str, AfterValidator(_language), Field(description="Template language, e.g. en, ru, pt_BR.")]
    media_url: HttpUrl = None


class ChatConfig(_ChannelConfig):
    """Chat: a chat session in a messenger, run by a bot scenario."""

    channel: Literal["chat"] = "chat"
    chat_id: Required
    bot_id: Annotated[Required, Field(description="The bot scenario id.")]
    messenger: Annotated[Messenger, BeforeValidator(_lower)]
    text: Text


ChannelConfig = Annotated[
    SMSConfig | EmailConfig | PushConfig | ViberConfig | WhatsAppConfig | ChatConfig,
    Field(discriminator="channel"),
]
CHANNEL_CONFIGS: dict[str, type[_ChannelConfig]] = {
    "sms": SMSConfig, "email": EmailConfig, "push": PushConfig,
    "viber": ViberConfig, "whatsapp": WhatsAppConfig, "chat": ChatConfig,
}


def _window_bounds(text: str) -> tuple[int, int]:
    """Seconds from midnight of a window's start and end (24:00 is 86400)."""
    match = _WINDOW.match(text)
    if not match:
        raise PydanticCustomError("window", "'{value}' is not HH:MM-HH:MM (for example 09:00-20:00)", {"value": text})
    h1, m1, s1, h2, m2, s2 = (int(g) if g else 0 for g in match.groups())
    if h1 > 23 or m1 > 59 or s1 > 59 or m2 > 59 or s2 > 59 or h2 > 24 or (h2 == 24 and (m2 or s2)):
        raise PydanticCustomError("window", "'{value}' has a time outside 00:00-24:00", {"value": text})
    start, end = h1 * 3600 + m1 * 60 + s1, h2 * 3600 + m2 * 60 + s2
    if end <= start:
        raise PydanticCustomError("window", "'{value}' ends before it starts; a window must end after its start on the same day", {"value": text})
    return start, end


def _window(text: str) -> str:
    _window_bounds(text)
    return text.strip()


class TemplateIn(BaseModel):
    """A template to create or to replace a stored one with."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Required, Field(max_length=NAME_LIMIT, description="Template name; searchable by any part of it.")]
    windows: list[Annotated[str, AfterValidator(_window)]] = Field(
        default_factory=list,
        description='Sending windows, "HH:MM-HH:MM" in the subscriber\'s local time; empty means the task\'s windows.',
    )
    channels: list[ChannelConfig] = Field(min_length=1, description="One configuration per channel, tried in this order.")

    @field_validator("windows")
    @classmethod
    def _windows_do_not_overlap(cls, windows: list[str]) -> list[str]:
        spans = sorted((_window_bounds(w), w) for w in windows)
        for (earlier, first), (later, second) in itertools.pairwise(spans):
            if earlier[1] > later[0]:
                raise PydanticCustomError("windows_overlap", "{first} and {second} overlap; give ranges that do not overlap",
                                          {"first": first, "second": second})
        return windows

    @field_validator("channels")
    @classmethod
    def _one_configuration_per_channel(cls, channels: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for config in channels:
            channel = config.channel
            if channel in seen:
                raise PydanticCustomError("duplicate_channel", "{channel} appears twice; give one configuration per channel",
                                          {"channel": channel})
            seen.add(channel)
        return channels


class TemplateOut(BaseModel):
    """A stored template, as the API and `notiflow template show --json` return it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    windows: list[str]
    channels: list[ChannelConfig]
    created_at: datetime
    updated_at: datetime


class SenderIn(BaseModel):
    """A sender name to register for one channel."""

    name: SenderName
    channel: Annotated[Literal["sms", "email", "push", "viber", "whatsapp", "telegram", "vk", "ok", "chat"], BeforeValidator(_lower)]


def _where(loc: tuple[int | str, ...]) -> str:
    """('channels', 0, 'sms', 'lifetime_minutes') → 'channels[0].lifetime_minutes (sms)'."""
    path, tag = "", None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif i >= 2 and loc[0] == "channels" and i == 2 and part in CHANNEL_CONFIGS:
            tag = part
        else:
            path += f".{part}" if path else part
    return f"{path} ({tag})" if tag else path or "template"


def explain(exc: ValidationError) -> str:
    """One line per problem: which field, what was wrong and what is allowed."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind, message = error["type"], error["msg"]
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            owner = CHANNEL_CONFIGS.get(str(loc[2])) if len(loc) > 3 and loc[0] == "channels" else TemplateIn
            allowed = [f for f in (owner or TemplateIn).model_fields if f != "channel"]
            message = f"is not a field here; allowed: {', '.join(allowed)}"
            if owner is TemplateIn and len(loc) == 1:
                message = f"is not a template field; allowed: {', '.join(TemplateIn.model_fields)}"
        elif kind in ("union_tag_not_found", "union_tag_invalid"):
            given = error.get("input", {}).get("channel") if isinstance(error.get("input"), dict) else None
            allowed = ", ".join(CHANNEL_CONFIGS)
            message = f"channel {given!r} is not a template channel; use one of {allowed}" if given is not None \
                else f"channel is required: one of {allowed}"
        elif kind == "too_short" and loc == ("channels",):
            message = "is empty; give at least one channel configuration"
        lines.append(f"{_where(loc)}: {message}")
    return "\n".join(lines)
