"""Validates task-file rows: each row becomes a message to store or a list of reasons it was refused.

What each column may hold is tasks.intake.columns' table (the spec's full list of params); this module adds
what needs the whole row: the channel's recipient and required columns, the template, the text.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_zones

from models.errors import CompositionError, ControlCharacter, OutOfRange, TaskFileError
from models.settings import get_settings
from models.status import Channel
from tasks.compose.compose import fill
from tasks.intake.columns import (
    ALIASES,
    BY_NAME,
    COLUMNS,
    CONTROL_CHARACTERS,
    MESSENGERS,
    RECIPIENT_COLUMNS,
    mask_payment,
    normalise_header,
    parse_bool,
    shown_value,
    text_too_long,
)
from tasks.intake.parse import MAX_CSV_CELL, OversizedCell, OversizedRow
from tasks.intake.phones import subscriber

# Columns that become the message itself; every other recognised column goes to its params.
CORE = frozenset({
    "phone", "messenger user id", "prefix", "email", "push registration id", "chat id", "text", "channel", "channels",
    "from", "external id", "bulk id", "group id", "flow id", "variables", "validity period", "template id",
    "use short links", "unique message id", "allowed time ranges",
})
# Channels whose recipient is a phone number; the others name an address, a device or a chat.
PHONE_CHANNELS = frozenset({Channel.SMS, Channel.VK, Channel.OK}) | MESSENGERS
ADDRESS_COLUMN = {Channel.EMAIL: "email", Channel.PUSH: "push registration id", Channel.CHAT: "chat id"}
REQUIRED = {channel: tuple(c.name for c in COLUMNS if channel in c.required_for) for channel in Channel}
DEFAULT_VALIDITY = 1440

__all__ = ["Columns", "Directory", "FirstUnique", "RowError", "TemplateView", "ValidRow", "cell_text", "keep_first_unique",
           "normalise_header", "parse_bool", "validate_rows"]


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    code: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f'row {self.row}, column "{self.column}": {self.reason}'


@dataclass(frozen=True)
class TemplateView:
    """What a row needs of a stored template: its per-channel configurations by channel name."""

    id: int
    name: str
    channels: dict[str, dict[str, Any]]
    windows: tuple[str, ...] = ()


@dataclass(frozen=True)
class Directory:
    """Stored templates and registered senders, loaded once per file (see tasks.compose.templates.directory)."""

    templates: dict[int, TemplateView] = field(default_factory=dict)
    senders: frozenset[tuple[str, str]] = frozenset()


@dataclass(slots=True)
class ValidRow:
    row: int
    recipient: str
    channel: Channel
    text: str
    sender: str
    time_zone: str
    validity_period: int
    external_id: str | None = None
    bulk_id: str | None = None
    group_id: str | None = None
    flow_id: str | None = None
    variables: dict[str, Any] | None = None
    template_id: int | None = None
    template_name: str | None = None
    use_short_links: bool = False
    unique_message_id: str | None = None
    # Earliest send time from `send at` / `start date` + `start time` (UTC), and the row's own windows.
    not_before: datetime | None = None
    windows: list[str] | None = None
    # Every zone the number may be in, when there are several (used with strict local time).
    time_zones: tuple[str, ...] = ()
    # The row's other recognised columns, parsed to their types (secrets never kept): spec params.md.
    params: dict[str, Any] = field(default_factory=dict)
    # The channel chain (spec §4): the channels after this first one, in the order they are tried, how
    # they are sent (None for a row of one channel), and whether this first channel is sent regardless.
    chain: tuple[ChainStep, ...] = ()
    send_order: str | None = None
    required: bool = False

    @property
    def stored_windows(self) -> str | None:
        """The row's windows as the message stores them and the planner reads them."""
        return " ".join(self.windows) if self.windows else None

    @property
    def stored_time_zones(self) -> str | None:
        """The row's candidate zones as the message stores them (only when there are several)."""
        return " ".join(self.time_zones) if len(self.time_zones) > 1 else None


@dataclass(frozen=True, slots=True)
class ChainStep:
    """A later channel of a row's chain: its own recipient, text, sender and sending lifetime."""

    channel: Channel
    recipient: str
    text: str
    sender: str
    validity_period: int
    required: bool = False


@dataclass
class Columns:
    """Where each known column sits in the header, and which headers were not recognised."""

    index: dict[str, int]
    unknown: list[str] = field(default_factory=list)

    @classmethod
    def from_header(cls, header: Sequence[str]) -> Columns:
        index: dict[str, int] = {}
        unknown: list[str] = []
        for position, raw in enumerate(header):
            if not raw:
                continue
            name = ALIASES.get(normalise_header(raw))
            if name is None:
                unknown.append(raw)
            elif name not in index:
                index[name] = position
        if not index and any(_looks_like_data(h) for h in header if h):
            raise TaskFileError(
                f"the task file has no header: row 1 holds data ({', '.join(h for h in header if h)[:80]}), not column names; "
                'insert a first row with the column names, e.g. "phone" and "text"'
            )
        if not any(name in index for name in RECIPIENT_COLUMNS):
            raise TaskFileError(
                'the task file has no recipient column: add a column named "phone" (or "email", "push registration id", '
                f'"chat id", "messenger user id"; found: {", ".join(h for h in header if h) or "nothing"})'
            )
        return cls(index=index, unknown=unknown)


def _looks_like_data(cell: str) -> bool:
    """A header cell that is a number or an address rather than a column name."""
    digits = sum(c.isdigit() for c in cell)
    return "@" in cell or digits >= max(5, len(cell) // 2)


def _shorten(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell_text(value: Any) -> str | None:
    """A cell as text; a whole number stored as a float (79123456789.0) loses its ".0"."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Row:
    """One row under validation: its filled recognised cells, and every error (not just the first)."""

    __slots__ = ("cells", "errors", "number")

    def __init__(self, number: int, cells: dict[str, Any]):
        self.number = number
        self.cells = cells
        self.errors: list[RowError] = []

    def get(self, name: str) -> Any:
        return self.cells.get(name)

    def fail(self, column: str, code: str, value: Any, reason: str) -> None:
        # A secret's value never leaves the row check (spec: payment data, password, secret key).
        shown = "" if value is None else shown_value(column, value)
        self.errors.append(RowError(self.number, column, code, _shorten(CONTROL_CHARACTERS.sub(_escape, shown)), reason))


def _escape(control: re.Match[str]) -> str:
    return f"\\x{ord(control.group()):02x}"


def _filled_cells(values: Sequence[Any], positions: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The row's recognised cells that hold something, by column name (a blank or NaN cell holds nothing)."""
    cells: dict[str, Any] = {}
    width = len(values)
    for name, position in positions:
        if position >= width:
            continue
        value = values[position]
        if value is None:
            continue
        if value.__class__ is str:
            value = value.strip()
            if not value:
                continue
        elif value.__class__ is float and math.isnan(value):  # pandas' and calamine's empty number
            continue
        cells[name] = value
    return cells


def _oversized(number: int, values: Sequence[Any], positions: Sequence[tuple[str, int]]) -> list[RowError]:
    """The refusal of a CSV row whose cells are too long to read (see tasks.intake.parse.OversizedRow); none when
    the long cells are all in columns notiflow does not read."""
    row = _Row(number, {})
    for name, position in positions:
        value = values[position] if position < len(values) else None
        if value.__class__ is OversizedCell:
            row.fail(name, "cell_too_long", value,
                     f"is {value.length:,} characters long; a CSV cell may hold at most {MAX_CSV_CELL:,}: shorten it")
    return row.errors


def validate_rows(
    rows: Iterable[tuple[int, Sequence[Any]]],
    columns: Columns,
    *,
    region: str,
    account_zone: str,
    default_channel: Channel,
    default_sender: str,
    directory: Directory | None = None,
) -> Iterator[ValidRow | list[RowError]]:
    """Yield, for each non-blank row, either the message it asks for or every reason it was refused.

    With a `directory`, rows may name a stored template and a `from` must be a registered sender;
    without one (a file checked with no database at hand) neither is looked up.
    """
    settings = get_settings()
    strict, max_text = settings.strict_local_time, settings.max_text_chars
    positions = list(columns.index.items())
    for number, values in rows:
        if values.__class__ is OversizedRow and (oversized := _oversized(number, values, positions)):
            yield oversized
            continue
        cells = _filled_cells(values, positions)
        if not cells and not any(v not in (None, "") for v in values):
            continue
        result = _validate_row(_Row(number, cells), region, account_zone, default_channel, default_sender, directory, max_text)
        if strict and isinstance(result, ValidRow) and result.recipient.startswith("+"):
            result.time_zones = candidate_zones(result.recipient)
        yield result


def candidate_zones(e164: str) -> tuple[str, ...]:
    """Every zone a number may be in, when there are several (strict local time needs them all)."""
    zones = tuple(z for z in phone_zones.time_zones_for_number(phonenumbers.parse(e164)) if z != "Etc/Unknown")
    return zones if len(zones) > 1 else ()


class FirstUnique:
    """Refuses a row whose `unique message id` an earlier row of the task already used (spec: a repeated
    id is a duplicate, not a second message). Must be shown the rows in row order, in one process."""

    def __init__(self) -> None:
        self._first_row: dict[str, int] = {}

    def duplicate(self, row: int, unique_message_id: str) -> RowError | None:
        """None for the id's first row (or that row again); the rejection of any later one."""
        earlier = self._first_row.setdefault(unique_message_id, row)
        if earlier == row:
            return None
        return RowError(row, "unique message id", "duplicate_unique_message_id", _shorten(unique_message_id),
                        f"repeats the unique message id of row {earlier}; only the first is kept")


def keep_first_unique(results: Iterable[ValidRow | list[RowError]]) -> Iterator[ValidRow | list[RowError]]:
    """The results with every repeat of a `unique message id` refused (see FirstUnique)."""
    first = FirstUnique()
    for result in results:
        if isinstance(result, ValidRow) and result.unique_message_id is not None:
            error = first.duplicate(result.row, result.unique_message_id)
            if error is not None:
                yield [error]
                continue
        yield result


def _validate_row(
    row: _Row, region: str, account_zone: str, default_channel: Channel, default_sender: str,
    directory: Directory | None, max_text: int,
) -> ValidRow | list[RowError]:
    values = _parse_columns(row)
    chain, required = _chain(row, values, default_channel, directory)
    channel = chain[0]
    recipient, zone = _recipient(row, channel, region, account_zone)
    _check_required(row, channel, f"{channel.value} messages need it")

    template, config = _template(row, channel, directory)
    if row.get("template id") is not None:
        # A row that names a template takes its text from it: the row's own text is ignored (spec §1).
        text = config.get("text")
        if template is not None and text is None:
            row.fail("template id", "template_without_text", template.id, f"template {template.id} has no text for {channel.value}")
    else:
        text = values.get("text")
        if row.get("text") is None:
            row.fail("text", "missing_text", None, "is empty; write the message text")
        elif text is not None and (too_long := text_too_long(len(text), max_text)) is not None:
            row.fail("text", "text_too_long", f"<{len(text):,} characters>", too_long)

    validity = _validity(values, config)
    variables = values.get("variables")
    if text is not None and not row.errors:
        try:
            text = fill(text, variables)
        except CompositionError as exc:
            column = "variables" if exc.variable else "text"
            row.fail(column, "missing_variable" if exc.variable else "invalid_placeholder", exc.variable or text, str(exc))

    sender = values.get("from")
    if sender is not None and directory is not None and (sender, channel.value) not in directory.senders:
        row.fail("from", "unknown_sender", sender,
                 f'sender "{sender}" is not registered for {channel.value}: register it with notiflow sender add "{sender}" --channel {channel.value}')
    sender = sender or config.get("sender") or default_sender
    # The row's own text, filled, is every channel's text but where a template gives one its own.
    own_text = text if template is None else None
    steps = tuple(
        _chain_step(row, values, step, step is required, own_text, region, account_zone, default_sender, directory)
        for step in chain[1:]
    )

    if row.errors:
        return row.errors
    params = {name: value for name, value in values.items() if name not in CORE and not BY_NAME[name].secret}
    if "payment data" in params:
        params["payment data"] = mask_payment(params["payment data"])
    if values.get("channels"):
        params["channels"] = [c.lower() for c in values["channels"]]
    return ValidRow(
        row=row.number,
        recipient=recipient,
        channel=channel,
        text=text or "",
        sender=sender,
        time_zone=zone,
        validity_period=validity,
        external_id=values.get("external id"),
        bulk_id=values.get("bulk id"),
        group_id=values.get("group id"),
        flow_id=values.get("flow id"),
        variables=variables,
        template_id=template.id if template else None,
        template_name=template.name if template else values.get("template name"),
        use_short_links=bool(values.get("use short links")),
        unique_message_id=values.get("unique message id"),
        not_before=_not_before(values, account_zone),
        windows=values.get("allowed time ranges"),
        params=params,
        chain=steps,
        send_order=(values.get("send order") or "sequential") if steps else None,
        required=channel is required,
    )


def _chain(row: _Row, values: dict[str, Any], default_channel: Channel, directory: Directory | None) -> tuple[list[Channel], Channel | None]:
    """The row's channels in the order they are tried, and the one sent regardless of the others (`required`).

    `channels` lists the cascade; `channel`, when it is not in that list, comes first; with neither, a
    template of several channels gives its own order, else the task's channel is used. `required`
    marks the `channel` column's channel.
    """
    single = Channel(values["channel"]) if "channel" in values else None
    listed = list(dict.fromkeys(Channel(c.lower()) for c in values.get("channels") or ()))
    if listed:
        chain = listed if single is None or single in listed else [single, *listed]
    elif single is not None:
        chain = [single]
    else:
        chain = _template_order(row, directory) or [default_channel]
    required = None
    if values.get("required") and len(chain) > 1:
        if single is None:
            row.fail("required", "required_without_channel", True,
                     "names no channel: write the channel sent regardless of the others in the channel column")
        else:
            required = single
    return chain, required


def _template_order(row: _Row, directory: Directory | None) -> list[Channel]:
    """The channels of the template the row names, in the template's order, when it has several."""
    raw = row.get("template id")
    if raw is None or directory is None:
        return []
    try:
        template = directory.templates.get(BY_NAME["template id"].parse(raw))
    except ValueError:
        return []  # _template says what is wrong with it
    if template is None or len(template.channels) < 2:
        return []
    return [Channel(name) for name in template.channels]


def _chain_step(
    row: _Row, values: dict[str, Any], channel: Channel, required: bool, own_text: str | None, region: str,
    account_zone: str, default_sender: str, directory: Directory | None,
) -> ChainStep:
    """A later channel of the row's chain, checked as the first one is: its recipient, its required columns,
    its template configuration and text (`own_text`, the row's filled text, without a template); problems
    are the row's, naming the channel."""
    recipient, _zone = _recipient(row, channel, region, account_zone)
    _check_required(row, channel, f"the row's channels include {channel.value}, whose messages need it")
    template, config = _template(row, channel, directory)
    text = own_text
    if template is not None and (text := config.get("text")) is not None and not row.errors:
        try:
            text = fill(text, values.get("variables"))
        except CompositionError:
            text = None  # the first channel's text already said what is wrong with it
    sender = values.get("from")
    if sender is None or directory is None or (sender, channel.value) not in directory.senders:
        # A `from` registered for another channel is not this one's sender: the template's or the default is.
        sender = config.get("sender") or default_sender
    return ChainStep(channel, recipient, text or "", sender, _validity(values, config), required)


def _check_required(row: _Row, channel: Channel, why: str) -> None:
    """Each column `channel` requires (its recipient's aside, which _recipient checks) is filled, else the row fails saying `why`."""
    for name in REQUIRED[channel]:
        if row.get(name) is None and name != ADDRESS_COLUMN.get(channel):
            row.fail(name, "missing_" + _code(name), None, f"is empty; {why} ({BY_NAME[name].format})")


def _validity(values: dict[str, Any], config: dict[str, Any]) -> int:
    """The validity period in minutes: the row's, else its template channel's lifetime, else the default."""
    return values.get("validity period") or int(config.get("lifetime_minutes") or DEFAULT_VALIDITY)


def _not_before(values: dict[str, Any], account_zone: str) -> datetime | None:
    """The latest of `send at` and `start date` + `start time`; a time without an offset is the account's."""
    if "send at" not in values and "start date" not in values and "start time" not in values:
        return None  # most rows: nothing to work out
    zone = ZoneInfo(account_zone)
    moments = []
    if "send at" in values:
        moments.append(datetime.fromisoformat(values["send at"]))
    if "start date" in values or "start time" in values:
        day = date.fromisoformat(values["start date"]) if "start date" in values else datetime.now(zone).date()
        moments.append(datetime.combine(day, time.fromisoformat(values.get("start time", "00:00:00"))))
    return max(m if m.tzinfo is not None else m.replace(tzinfo=zone) for m in moments).astimezone(UTC)


def _code(name: str) -> str:
    return name.replace(" ", "_")


# Checked with the recipient and the template, which know more than the column alone.
_CHECKED_WITH_ROW = frozenset({"phone", "messenger user id", "template id", "chat id"})
# Parsed values by (column, cell type, cell), for the columns most files fill with a few values over and
# over (channel, validity period, flags, time windows); only immutable results (a list of texts kept as a
# tuple), and only the first values seen.
_PARSED: dict[tuple[str, type, Any], Any] = {}
_PARSED_LIMIT = 4096


def _parse_columns(row: _Row) -> dict[str, Any]:
    """Every filled recognised cell of the row parsed to its type; each bad one recorded with its reason."""
    values: dict[str, Any] = {}
    for name, raw in row.cells.items():
        if name in _CHECKED_WITH_ROW:
            continue
        key = (name, raw.__class__, raw)
        parsed = _PARSED.get(key, _PARSED)
        if parsed is not _PARSED:
            values[name] = list(parsed) if parsed.__class__ is tuple else parsed
            continue
        try:
            parsed = values[name] = BY_NAME[name].parse(raw)
        except OutOfRange as exc:
            row.fail(name, f"{_code(name)}_out_of_range", raw, str(exc))
        except ControlCharacter as exc:
            row.fail(name, "control_character", raw, str(exc))
        except ValueError as exc:
            row.fail(name, f"invalid_{_code(name)}", raw, str(exc))
        else:
            if len(_PARSED) < _PARSED_LIMIT:
                if parsed.__class__ in (str, int, bool):
                    _PARSED[key] = parsed
                elif parsed.__class__ is list and all(item.__class__ is str for item in parsed):
                    _PARSED[key] = tuple(parsed)  # time windows, channels: each row gets its own list
    return values


def _recipient(row: _Row, channel: Channel, region: str, account_zone: str) -> tuple[str, str]:
    """Who the message goes to on its channel, and the subscriber's time zone (from the phone if any)."""
    phone_column = "messenger user id" if row.get("phone") is None and channel in MESSENGERS else "phone"
    raw_phone = row.get(phone_column)
    phone, zone = "", account_zone
    if raw_phone is not None:
        try:
            phone, zone = subscriber(raw_phone, region, account_zone, prefix=cell_text(row.get("prefix")))
        except (ValueError, phonenumbers.NumberParseException) as exc:
            row.fail(phone_column, "invalid_phone", raw_phone, f"{_shorten(raw_phone)!r} {exc}")
    if channel in PHONE_CHANNELS:
        if raw_phone is None:
            needs = "phone (or messenger user id)" if channel in MESSENGERS else "phone"
            row.fail("phone", "missing_phone", None, f"is empty; {channel.value} messages need the recipient's {needs}")
        return phone, zone
    column = ADDRESS_COLUMN[channel]
    address = row.get(column)
    if address is None:
        row.fail(column, "missing_" + _code(column), None, f"is empty; {channel.value} messages need the recipient's {column}")
        return "", zone
    try:
        return BY_NAME[column].parse(address), zone
    except ValueError as exc:
        row.fail(column, "invalid_" + _code(column), address, str(exc))
        return "", zone


def _template(row: _Row, channel: Channel, directory: Directory | None) -> tuple[TemplateView | None, dict[str, Any]]:
    """The stored template the row names, and its configuration for the row's channel."""
    raw = row.get("template id")
    if raw is None:
        return None, {}
    try:
        template_id = BY_NAME["template id"].parse(raw)
    except ValueError as exc:
        row.fail("template id", "invalid_template_id", raw, f"{exc}; template ids are listed by notiflow template list")
        return None, {}
    template = directory.templates.get(template_id) if directory is not None else None
    if template is None:
        row.fail("template id", "unknown_template", raw, f"template {template_id} does not exist; find templates with notiflow template list")
        return None, {}
    config = template.channels.get(channel.value)
    if config is None:
        row.fail("template id", "template_lacks_channel", raw,
                 f"template {template_id} has no {channel.value} configuration (it has {', '.join(template.channels) or 'none'})")
        return None, {}
    return template, config
