"""Every column of the full param list (spec params.md): its header spellings, type, limits and example.

A column's `parse` turns a non-empty cell into its typed value or raises ValueError with a reason that
says what is allowed; validation names the row and column around it. The same table writes the
downloadable task templates' column descriptions, so what the templates promise is what is checked.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlsplit

from models.errors import ControlCharacter, OutOfRange
from models.status import Channel

MESSENGERS = frozenset({Channel.VIBER, Channel.WHATSAPP, Channel.TELEGRAM})
_TRUE = {"true", "1", "yes", "y", "on", "да"}
_FALSE = {"false", "0", "no", "n", "off", "нет"}
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+")
_ATTACHMENT = re.compile(r"(?P<type>[a-z]+(?:_[a-z]+)?)(?P<owner>-?\d+)_(?P<media>\d+)")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:[-_][a-z]{2,4})?", re.IGNORECASE)
MAX_ATTACHMENTS = 10
# The longest JSON or free-text cell, as for a CSV cell (tasks.intake.parse.MAX_CSV_CELL): a task file's
# row is not a place for megabytes.
MAX_CELL_BYTES = 128 * 1024
# Characters no cell may hold: control characters but tab and line breaks (PostgreSQL refuses NUL).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A JSON escape of a control character other than tab and line breaks (PostgreSQL stores no NUL).
_JSON_CONTROL = re.compile(r"\\u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])")
# A card number: 12–19 digits, maybe in groups; or one masked already (411111******1111).
_CARD_NUMBER = re.compile(r"[0-9](?:[ -]?[0-9]){11,18}|[0-9]{0,6}[*xX•]{4,13}[0-9]{4}")
# The columns whose values are secrets: never stored or shown in full (spec params.md).
SECRET_COLUMNS = frozenset({"payment data", "password", "secret key"})
HIDDEN = "<hidden>"


def parse_bool(value: Any) -> bool:
    """A spreadsheet's idea of a boolean: Excel TRUE/FALSE, 1/0, true/false, yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{_quote(value)} is not true or false (also 1/0, yes/no)")


def _quote(value: Any, limit: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _text(value: Any) -> str:
    """A cell as text; a whole number stored as a float (79123456789.0) loses its ".0"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


_search_control = CONTROL_CHARACTERS.search


def refuse_controls(result: str) -> str:
    """`result`, unless it holds a control character. The hot parsers call it only when isprintable() is
    false (one C call for nearly every cell: a tab, a line break or a no-break space make it false too)."""
    control = CONTROL_CHARACTERS.search(result)
    if control is not None:
        raise ControlCharacter(f"holds the control character U+{ord(control.group()):04X} at character {control.start() + 1}; "
                               "remove it (only tabs and line breaks may be in a text)")
    return result


def text(*, max_chars: int | None = None, max_bytes: int | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        result = _text(value)
        if not result.isprintable() and _search_control(result):
            refuse_controls(result)
        if max_chars is not None and len(result) > max_chars:
            raise ValueError(f"is {len(result)} characters long; at most {max_chars} are allowed")
        if max_bytes is not None and len(result) * 4 > max_bytes and len(result.encode()) > max_bytes:
            raise ValueError(f"is {len(result.encode())} bytes long (UTF-8); at most {max_bytes} are allowed")
        return result
    return parse


def message_text(value: Any) -> str:
    """The message body; its length is checked with the row, against NOTIFLOW_MAX_TEXT_CHARS."""
    result = _text(value)
    if not result.isprintable() and _search_control(result):
        refuse_controls(result)
    return result


def text_too_long(length: int, limit: int) -> str | None:
    """Why a message text of `length` characters is refused, or None (a 200 MB cell is not one SMS)."""
    if length <= limit:
        return None
    return f"is {length:,} characters long; a message text may have at most {limit:,} (NOTIFLOW_MAX_TEXT_CHARS): shorten it"


def token(*, max_bytes: int) -> Callable[[Any], str]:
    """An opaque id such as a device token: no spaces inside."""
    def parse(value: Any) -> str:
        result = text(max_bytes=max_bytes)(value)
        if any(c.isspace() for c in result):
            raise ValueError(f"{_quote(value)} contains spaces; a device token is one unbroken string")
        return result
    return parse


def integer(low: int, high: int, unit: str = "") -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"is a true/false cell, not a whole number from {low} to {high}{unit}")
        try:
            number = float(str(value).strip().replace(",", "."))
        except ValueError:
            raise ValueError(f"{_quote(value)} is not a whole number; write one from {low} to {high}{unit}") from None
        if not number.is_integer():
            raise ValueError(f"{_quote(value)} is not a whole number; write one from {low} to {high}{unit}")
        if not low <= number <= high:
            raise OutOfRange(f"{int(number)} is outside {low}–{high}{unit}")
        return int(number)
    return parse


def choice(*allowed: str) -> Callable[[Any], str]:
    """One of `allowed`, matched without regard to case; the result is spelled as in the spec."""
    by_key = {a.lower(): a for a in allowed}

    def parse(value: Any) -> str:
        found = by_key.get(_text(value).lower())
        if found is None:
            raise ValueError(f"{_quote(value)} is not allowed; use one of {', '.join(allowed)}")
        return found
    return parse


def json_value(kind: type | None = None, *, max_bytes: int = MAX_CELL_BYTES, example: str = "",
               check: Callable[[Any], None] | None = None) -> Callable[[Any], Any]:
    """JSON text of at most `max_bytes`; `kind` dict or list demands an object or a list."""
    what = {dict: "a JSON object", list: "a JSON list"}.get(kind, "JSON")  # type: ignore[call-overload]
    hint = f" like {example}" if example else ""

    def parse(value: Any) -> Any:
        raw = _text(value)
        # A character is at most four bytes: most cells need no encoding to be measured.
        if len(raw) * 4 > max_bytes and len(raw.encode()) > max_bytes:
            raise ValueError(f"is {len(raw.encode())} bytes long (UTF-8); at most {max_bytes} are allowed")
        if "\\u" in raw and (control := _JSON_CONTROL.search(raw)) is not None:
            raise ValueError(f"holds the control character {control.group()}; remove it (only \\t, \\n and \\r may be escaped)")
        try:
            result = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"is not valid JSON ({exc.args[0].split(':')[0]}); write {what}{hint}") from None
        if kind is not None and not isinstance(result, kind):
            raise ValueError(f"is {type(result).__name__ if result is not None else 'null'} JSON; write {what}{hint}")
        if check is not None:
            check(result)
        return result
    return parse


def url(*, max_bytes: int | None = None, schemes: Sequence[str] = ("http", "https")) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        result = refuse_controls(_text(value))
        if max_bytes is not None and len(result.encode()) > max_bytes:
            raise ValueError(f"is {len(result.encode())} bytes long; at most {max_bytes} are allowed")
        parts = urlsplit(result)
        if parts.scheme.lower() not in schemes or not (parts.netloc or parts.path) or " " in result:
            raise ValueError(f"{_quote(value)} is not a link; write a full address starting with {' or '.join(s + '://' for s in schemes)}")
        if parts.scheme.lower() in ("http", "https") and not parts.netloc:
            raise ValueError(f"{_quote(value)} has no host; write a full address like https://example.com/page")
        return result
    return parse


def email(value: Any) -> str:
    result = refuse_controls(_text(value))
    if len(result) > 254 or not _EMAIL.fullmatch(result):
        raise ValueError(f"{_quote(value)} is not an e-mail address like name@example.com")
    return result


def attachments(value: Any) -> list[str]:
    """Up to ten `<type><[-]owner_id>_<media_id>` items, comma-separated or a JSON list."""
    raw = _text(value)
    items: list[Any] = json.loads(raw) if raw.startswith("[") else [p.strip() for p in raw.split(",") if p.strip()]
    if len(items) > MAX_ATTACHMENTS:
        raise ValueError(f"has {len(items)} attachments; at most {MAX_ATTACHMENTS} are allowed")
    for item in items:
        if not isinstance(item, str) or not _ATTACHMENT.fullmatch(item):
            raise ValueError(f"{_quote(item)} is not an attachment like photo-123_456 (<type><[-]owner_id>_<media_id>)")
    return items


def language(value: Any) -> str:
    result = _text(value)
    if not _LANGUAGE.fullmatch(result):
        raise ValueError(f"{_quote(value)} is not a language code like ru or en")
    return result.lower()


def _strptime(raw: str, patterns: Sequence[str]) -> datetime | None:
    """The first of `patterns` that reads `raw`, or None."""
    for pattern in patterns:
        try:
            return datetime.strptime(raw, pattern)
        except ValueError:
            continue
    return None


def start_date(value: Any) -> str:
    """YY-MM-DD (also YYYY-MM-DD, DD.MM.YYYY or an Excel date cell), as an ISO date."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    parsed = _strptime(_text(value), ("%y-%m-%d", "%Y-%m-%d", "%d.%m.%Y", "%d.%m.%y"))
    if parsed is None:
        raise ValueError(f"{_quote(value)} is not a date; write YY-MM-DD, e.g. 26-12-01")
    return parsed.date().isoformat()


def start_time(value: Any) -> str:
    """HH-MM-SS (also HH:MM:SS, HH:MM or an Excel time cell), as an ISO time."""
    if isinstance(value, datetime):
        return value.time().isoformat()
    if isinstance(value, time):
        return value.isoformat()
    parsed = _strptime(_text(value), ("%H-%M-%S", "%H:%M:%S", "%H:%M", "%H-%M"))
    if parsed is None:
        raise ValueError(f"{_quote(value)} is not a time of day; write HH-MM-SS, e.g. 10-30-00")
    return parsed.time().isoformat()


_SEND_AT_FORMATS = (
    "%y-%m-%d %H:%M:%S", "%y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%y-%m-%d %H-%M-%S", "%Y-%m-%d %H-%M-%S", "%y-%m-%d",
)


def send_at(value: Any) -> str:
    """A date and time: YY-MM-DD HH:MM:SS, YYYY-MM-DD HH:MM[:SS], ISO 8601 (with an offset if any),
    DD.MM.YYYY HH:MM[:SS] or an Excel date-time cell. Without an offset it is local time."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return datetime.combine(value, time(0)).isoformat()
    raw = _text(value)
    parsed = _strptime(raw, _SEND_AT_FORMATS)
    if parsed is not None:
        return parsed.isoformat()
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{_quote(value)} is not a date and time; write YY-MM-DD HH:MM:SS, e.g. 26-12-01 10:30:00") from None
    return parsed.isoformat()


def _time_of_day(raw: Any) -> time:
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a time like \"09:00:00\"")
    parsed = _strptime(raw, ("%H:%M:%S", "%H:%M"))
    if parsed is not None:
        return parsed.time()
    if raw in ("24:00", "24:00:00"):
        return time.max
    raise ValueError(f"{raw!r} is not a time like \"09:00:00\"")


def allowed_time_ranges(value: Any) -> list[str]:
    """JSON list of ["HH:MM:SS", "HH:MM:SS"] pairs, also one bare pair and the spec's brace form
    {"09:30:00", "12:00:00"}; returned as the task limiter's "HH:MM:SS-HH:MM:SS" windows."""
    raw = _text(value)
    if "{" in raw and not _is_json(raw):
        raw = raw.replace("{", "[").replace("}", "]")
        if not raw.lstrip().startswith("[["):
            raw = f"[{raw}]"
    ranges = json_value(list, example='[["09:00:00", "20:00:00"]]')(raw)
    if len(ranges) == 2 and all(isinstance(r, str) for r in ranges):
        ranges = [ranges]
    _check_time_ranges(ranges)
    return [f"{start}-{'24:00' if end in ('24:00', '24:00:00') else end}" for start, end in ranges]


def _is_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _check_time_ranges(ranges: list[Any]) -> None:
    spans: list[tuple[time, time]] = []
    for item in ranges:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f'{json.dumps(item)} is not a range like ["09:00:00", "20:00:00"]')
        start, end = _time_of_day(item[0]), _time_of_day(item[1])
        if start >= end:
            raise ValueError(f"range {json.dumps(item)} ends before it starts; split a range across midnight in two")
        spans.append((start, end))
    if not spans:
        raise ValueError('is an empty list; give at least one range like [["09:00:00", "20:00:00"]] or leave it empty')
    spans.sort()
    for (_, earlier_end), (later_start, _) in zip(spans, spans[1:]):
        if later_start < earlier_end:
            raise ValueError("has ranges that overlap; give ranges that do not overlap")


def _check_channels(items: list[Any]) -> None:
    names = {c.value for c in Channel}
    for item in items:
        if not isinstance(item, str) or item.lower() not in names:
            raise ValueError(f"{json.dumps(item)} is not a channel; use {', '.join(sorted(names))}")
    lowered = [i.lower() for i in items]
    if len(set(lowered)) != len(lowered):
        raise ValueError("names a channel twice; list each channel once, in the order to try them")
    if not items:
        raise ValueError('is an empty list; list channels like ["viber", "sms"] or leave it empty')


def _check_button(button: dict[str, Any]) -> None:
    unknown = set(button) - {"text", "payload", "url"}
    if unknown:
        raise ValueError(f"has unknown keys {', '.join(sorted(unknown))}; a button has text, payload and url")
    if "text" in button and len(str(button["text"])) > 20:
        raise ValueError("has a text longer than 20 characters")
    if button.get("url"):
        url(schemes=("http", "https", "viber"))(button["url"])


def _check_preview(preview: dict[str, Any]) -> None:
    unknown = set(preview) - {"text", "image_url"}
    if unknown:
        raise ValueError(f"has unknown keys {', '.join(sorted(unknown))}; a preview has text and image_url")
    if preview.get("image_url"):
        url()(preview["image_url"])


def _check_payment(payment: dict[str, Any]) -> None:
    unknown = set(payment) - {"card_number", "transaction_id"}
    if unknown:
        # Key names only, and only plain ones: a value pasted as a key is a secret too.
        named = sorted(k for k in unknown if _plain_key(k))
        keys = ", ".join(named) if len(named) == len(unknown) else f"{len(unknown)} others"
        raise ValueError(f"has keys other than card_number and transaction_id ({keys}); remove them: "
                         "payment data keeps only the card number and the transaction id (never a CVV)")
    card = payment.get("card_number")
    if card is not None and not _is_card_number(card):
        raise ValueError("has a card_number that is not a card number (12–19 digits passing the Luhn check, or masked "
                         "like 411111******1111); write the card number alone")


def _plain_key(key: str) -> bool:
    """A JSON key that reads as a name (cvv, expiry), not as a pasted value (a CVV, a number)."""
    return key.isidentifier() and len(key) <= 32


def _is_card_number(card: Any) -> bool:
    if not isinstance(card, (str, int)) or isinstance(card, bool) or not _CARD_NUMBER.fullmatch(str(card)):
        return False
    digits = [int(d) for d in re.sub(r"\D", "", str(card))]
    if len(digits) < 12:
        return True  # masked: only its last digits are left to check
    # Luhn: a typo, or a CVV run into the number, fails it.
    total = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    return total % 10 == 0


def mask_payment(payment: dict[str, Any]) -> dict[str, Any]:
    """Payment data as it may be stored and shown: the card number's last four digits, the transaction id,
    nothing of any other key."""
    masked = {(key if key in ("card_number", "transaction_id") or _plain_key(key) else f"<hidden key {i}>"):
              (value if key == "transaction_id" else HIDDEN) for i, (key, value) in enumerate(payment.items(), start=1)}
    card = payment.get("card_number")
    # Only a well-formed number shows its last digits: in anything else they may be a CVV's.
    if _is_card_number(card):
        masked["card_number"] = "**** " + re.sub(r"\D", "", str(card))[-4:]
    return masked


def shown_value(column: str, value: Any) -> str:
    """A cell as a rejection may quote it: secrets masked (payment data keeps the card's last four digits)."""
    if column not in SECRET_COLUMNS:
        return str(value)
    if column == "payment data":
        try:
            payment = json.loads(str(value))
        except ValueError:
            payment = None
        if isinstance(payment, dict):
            return json.dumps(mask_payment(payment), ensure_ascii=False)
    return HIDDEN


@dataclass(frozen=True)
class Column:
    name: str
    group: str
    parse: Callable[[Any], Any]
    format: str
    example: Any = None
    aliases: tuple[str, ...] = ()
    required_for: frozenset[Channel] = frozenset()
    # Never stored or exported (API credentials).
    secret: bool = False


_ALL_CHANNELS = ", ".join(c.value for c in Channel)
_UNIQUE = 10240


def _columns() -> tuple[Column, ...]:
    chat, whatsapp, push, mail = frozenset({Channel.CHAT}), frozenset({Channel.WHATSAPP}), frozenset({Channel.PUSH}), frozenset({Channel.EMAIL})
    recipient, content, routing, timing, extras = "Recipient", "Content", "Channel and routing", "Timing", "Callbacks and extras"
    return (
        # Recipient
        Column("phone", recipient, text(max_chars=64), "recipient phone, digits, normalised to E.164; required for SMS, VK, OK",
               "+79161234567", aliases=("phone number",)),
        Column("messenger user id", recipient, text(max_chars=64), "recipient phone for messenger campaigns (Viber, WhatsApp, Telegram) when there is no phone column",
               "+79161234567"),
        Column("prefix", recipient, text(max_chars=8), "phone prefix such as +1, applied to national numbers", "+7"),
        Column("email", recipient, email, "recipient e-mail address; required for email", "anna@example.com", required_for=mail),
        Column("push registration id", recipient, token(max_bytes=4096), "device token; required for push", "fcm:dGVzdC10b2tlbg",
               required_for=push),
        Column("external id", recipient, text(max_bytes=_UNIQUE), "recipient id in the customer's system, ≤ 10240 bytes", "crm-1001"),
        Column("client id", recipient, text(max_chars=255), "customer's platform id", "client-7"),
        Column("recipient type", recipient, choice("individual", "group"), "individual or group", "individual"),
        Column("destinations", recipient, json_value((dict, list), example='{"to": "+79161234567"}'),  # type: ignore[arg-type]
               "JSON object describing the recipient(s)", '{"to": "+79161234567"}'),
        # Content
        Column("text", content, message_text,
               "message body, split into SMS parts, at most NOTIFLOW_MAX_TEXT_CHARS characters (default 20,000); "
               "may use {name} placeholders filled from variables",
               "Hello, {name}! Your order is ready.", aliases=("message content",)),
        Column("subject", content, text(max_chars=255), "e-mail subject, ≤ 255 characters; default: the text's first line",
               "Your order is ready", aliases=("e-mail subject", "email subject")),
        Column("template id", content, integer(1, 2**63 - 1), "id of a stored template (notiflow template list); when set, text is ignored", None),
        Column("template name", content, text(max_chars=255), "registered template name; required for WhatsApp and chat", "order_ready",
               required_for=whatsapp | chat),
        Column("templatenamespace", content, text(max_chars=255), "WhatsApp Business namespace; required for WhatsApp", "c8ae5f90_307a_ca4c_b8f6_d1e2a2573574",
               required_for=whatsapp),
        Column("template data", content, json_value((dict, list), example='{"1": "Anna"}'),  # type: ignore[arg-type]
               "JSON, WhatsApp template variables", '{"1": "Anna"}'),
        Column("variables", content, json_value(dict, example='{"name": "Anna"}'), 'JSON object {"name": "value"} filling {name} in the text',
               '{"name": "Anna"}'),
        Column("language", content, language, "template language, e.g. ru, en", "ru"),
        Column("message type", content, choice("text", "image", "video", "audio", "document"), "text, image, video, audio, document", "text"),
        Column("attachments", content, attachments, "≤ 10 per message, comma-separated, each <type><[-]owner_id>_<media_id>", "photo-123_456"),
        Column("media url", content, url(max_bytes=4000), "media file URL (WhatsApp)", "https://example.com/receipt.pdf"),
        Column("button", content, json_value(dict, example='{"text": "Open", "url": "https://example.com"}', check=_check_button),
               'JSON {"text": .., "payload": .., "url": ..} (chats); text ≤ 20 characters', '{"text": "Open", "url": "https://example.com"}'),
        Column("button text", content, text(max_chars=20), "≤ 20 characters", "Open the order"),
        Column("button url", content, url(max_bytes=4000, schemes=("http", "https", "viber")), "button link (Viber share link allowed)",
               "https://example.com/orders/1"),
        Column("message preview", content, json_value(dict, example='{"text": "Sale", "image_url": "https://example.com/a.png"}', check=_check_preview),
               'JSON {"text": .., "image_url": ..}', '{"text": "Your order", "image_url": "https://example.com/order.png"}'),
        Column("data structure", content, json_value(example='{"blocks": []}'), "JSON message structure", '{"blocks": []}'),
        Column("use short links", content, parse_bool, "true/false: replace URLs in the text with tracked short links", False),
        # Channel and routing
        Column("channel", routing, choice(*(c.value for c in Channel)), f"one of {_ALL_CHANNELS}; default sms", "sms"),
        Column("channels", routing, json_value(list, example='["viber", "sms"]', check=_check_channels),
               "JSON list of channels (cascade order); the first is used when channel is empty", '["viber", "sms"]'),
        Column("required", routing, parse_bool, "true/false: send on this channel even if another delivered", False),
        Column("send order", routing, choice("sequential", "parallel"), "sequential (cascade, default) or parallel", "sequential"),
        Column("priority", routing, choice("high", "normal", "low"), "high, normal (default), low", "normal"),
        Column("from", routing, text(max_chars=64), "registered sender name (notiflow sender list); default the account's sender",
               None, aliases=("from name", "display name", "chat operator")),
        Column("provider", routing, choice("sandbox"), "provider override; normally empty (sandbox is the only one connected)", None),
        Column("messenger type", routing, choice("whatsapp", "viber", "facebook", "telegram", "slack", "imessage"),
               "whatsapp, viber, facebook, telegram, slack, imessage", None),
        Column("platform", routing, choice("iOS", "Android", "Web"), "iOS, Android, Web; required for push", "Android", required_for=push),
        Column("bot id", routing, text(max_chars=255), "bot scenario id; required for chat", "bot-support", required_for=chat),
        Column("chat id", routing, text(max_chars=255), "chat id; required for chat", "chat-1001", required_for=chat),
        Column("main chat id", routing, text(max_chars=255), "main chat id", None),
        Column("chat session id", routing, text(max_chars=255), "existing chat session", None),
        Column("chat session name", routing, text(max_chars=255), "operator chat session name; required for chat", "Order questions",
               required_for=chat),
        Column("continue last or start new session", routing, parse_bool,
               "true = continue an existing session, false = new; required for chat", True, required_for=chat),
        Column("group id", routing, text(max_chars=255), "grouping id", None),
        Column("bulk id", routing, text(max_chars=255), "batch id shared by a batch of messages", None),
        Column("flow id", routing, text(max_chars=255), "message flow id (Viber); generated when empty", None),
        Column("unique message id", routing, text(max_bytes=_UNIQUE),
               "customer's unique id, ≤ 10240 bytes; a repeated id is a duplicate, not a second message", "order-1001-ready"),
        Column("count", routing, integer(1, 1000), "messages per provider request, integer 1–1000", None),
        # Timing
        Column("start date", timing, start_date, "YY-MM-DD (also an Excel date)", None),
        Column("start time", timing, start_time, "HH-MM-SS (also an Excel time)", None),
        Column("send at", timing, send_at, "date-time: YY-MM-DD HH:MM:SS, YYYY-MM-DD HH:MM, ISO 8601 or an Excel date-time", None),
        Column("validity period", timing, integer(1, 2880, " minutes"), "minutes, integer 1–2880; afterwards the message is EXPIRED", 1440),
        Column("allowed time ranges", timing, allowed_time_ranges,
               'JSON list of ["HH:MM:SS", "HH:MM:SS"] ranges in the subscriber\'s local time, not overlapping; default 09:00:00–20:00:00',
               '[["09:00:00", "13:00:00"], ["14:00:00", "20:00:00"]]'),
        Column("timeout", timing, integer(1000, 60000, " ms"), "provider request timeout in ms, 1000–60000", None),
        Column("message category", timing, text(max_chars=255), "marketing category, used for delayed messages", None),
        # Callbacks and extras
        Column("callback url", extras, url(max_bytes=4000), "URL that receives status changes, ≤ 4000 bytes", "https://example.com/notiflow/status"),
        Column("callback data", extras, json_value(max_bytes=_UNIQUE, example='{"order": 1001}'), "JSON passed back in callbacks, ≤ 10240 bytes",
               '{"order": 1001}'),
        Column("error codes", extras, json_value(list, example="[1, 2]"), "JSON list of codes", None),
        Column("filters", extras, json_value(dict, example='{"operator": "MTS"}'), "JSON object", None),
        Column("send rules", extras, json_value(dict, example='{"max_per_day": 1}'), "JSON object", None),
        Column("payment data", extras, json_value(dict, example='{"card_number": "...", "transaction_id": "..."}', check=_check_payment),
               'JSON {"card_number": .., "transaction_id": ..}; only the last four card digits are kept', None),
        Column("force send", extras, parse_bool, "true/false", None),
        Column("send mode", extras, choice("auto", "manual"), "auto or manual", None),
        Column("send status", extras, choice("sent", "failed", "pending"), "sent, failed, pending (import of historic messages)", None),
        Column("notes", extras, text(max_bytes=MAX_CELL_BYTES), "free text, ≤ 128 KB", None),
        Column("password", extras, text(), "API credential: never stored or exported", None, secret=True),
        Column("secret key", extras, text(), "API credential: never stored or exported", None, secret=True),
    )


COLUMNS: tuple[Column, ...] = _columns()
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
RECIPIENT_COLUMNS = ("phone", "messenger user id", "email", "push registration id", "chat id")


def normalise_header(header: Any) -> str:
    """`Send At`, ` send at `, `send_at` and `SEND-AT` all name the same column."""
    return " ".join(re.sub(r"[_\-]", " ", str(header)).lower().split())


ALIASES: dict[str, str] = {normalise_header(alias): c.name for c in COLUMNS for alias in (c.name, *c.aliases)}
