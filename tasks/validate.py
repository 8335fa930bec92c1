"""Validates task-file rows: each row becomes a message to store or a list of reasons it was refused."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from models.errors import TaskFileError
from models.status import Channel
from tasks.compose import CompositionError, fill
from tasks.phones import subscriber

# Canonical column → the header spellings that mean it (after normalise_header).
COLUMNS: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "phone number"),
    "text": ("text", "message content"),
    "channel": ("channel",),
    "from": ("from", "from name", "display name"),
    "external id": ("external id",),
    "bulk id": ("bulk id",),
    "group id": ("group id",),
    "flow id": ("flow id",),
    "variables": ("variables",),
    "validity period": ("validity period",),
    "template id": ("template id",),
    "use short links": ("use short links",),
    "prefix": ("prefix",),
}
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_ALIASES = {alias: name for name, aliases in COLUMNS.items() for alias in aliases}
CONNECTED_CHANNELS = frozenset({Channel.SMS})
VALIDITY_RANGE = (1, 2880)
DEFAULT_VALIDITY = 1440


def normalise_header(header: str) -> str:
    """`Send At`, ` send at `, `send_at` and `SEND-AT` all name the same column."""
    return " ".join(re.sub(r"[_\-]", " ", str(header)).lower().split())


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


@dataclass(frozen=True)
class Directory:
    """Stored templates and registered senders, loaded once per file (see tasks.templates.directory)."""

    templates: dict[int, TemplateView] = field(default_factory=dict)
    senders: frozenset[tuple[str, str]] = frozenset()


@dataclass
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
    # The row's other recognised columns, parsed to their types (secrets never kept): spec params.md.
    params: dict[str, Any] = field(default_factory=dict)


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
            name = _ALIASES.get(normalise_header(raw))
            if name is None:
                unknown.append(raw)
            elif name not in index:
                index[name] = position
        if "phone" not in index:
            raise TaskFileError(
                f"the task file has no recipient column: add a column named \"phone\" (found: {', '.join(h for h in header if h) or 'nothing'})"
            )
        return cls(index=index, unknown=unknown)


def _shorten(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(values: Sequence[Any], position: int | None) -> Any:
    if position is None or position >= len(values):
        return None
    value = values[position]
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def cell_text(value: Any) -> str | None:
    """A cell as text; a whole number stored as a float (79123456789.0) loses its ".0"."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Row:
    """One row under validation: collects every error instead of stopping at the first."""

    def __init__(self, number: int, values: Sequence[Any], columns: Columns):
        self.number = number
        self.values = values
        self.columns = columns
        self.errors: list[RowError] = []

    def get(self, name: str) -> Any:
        return _cell(self.values, self.columns.index.get(name))

    def fail(self, column: str, code: str, value: Any, reason: str) -> None:
        self.errors.append(RowError(self.number, column, code, _shorten("" if value is None else value), reason))


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
    for number, values in rows:
        if not any(v not in (None, "") for v in values):
            continue
        yield _validate_row(_Row(number, values, columns), region, account_zone, default_channel, default_sender, directory)


def keep_first_unique(results: Iterable[ValidRow | list[RowError]]) -> Iterator[ValidRow | list[RowError]]:
    """Refuse a row whose `unique message id` an earlier row of the task already used (spec: a repeated
    id is a duplicate, not a second message). Must see the results in row order, in one process."""
    first_row: dict[str, int] = {}
    for result in results:
        if isinstance(result, ValidRow) and result.unique_message_id is not None:
            earlier = first_row.setdefault(result.unique_message_id, result.row)
            if earlier != result.row:
                yield [RowError(result.row, "unique message id", "duplicate_unique_message_id", _shorten(result.unique_message_id),
                                f"repeats the unique message id of row {earlier}; only the first is kept")]
                continue
        yield result


def _validate_row(
    row: _Row, region: str, account_zone: str, default_channel: Channel, default_sender: str,
    directory: Directory | None,
) -> ValidRow | list[RowError]:
    raw_phone = row.get("phone")
    recipient, zone = "", account_zone
    if raw_phone is None:
        row.fail("phone", "missing_phone", None, "is empty; every message needs the recipient's phone")
    else:
        try:
            recipient, zone = subscriber(raw_phone, region, account_zone, prefix=cell_text(row.get("prefix")))
        except (ValueError, phonenumbers.NumberParseException) as exc:
            row.fail("phone", "invalid_phone", raw_phone, f"{_shorten(raw_phone)!r} {exc}")

    raw_channel = row.get("channel")
    channel = default_channel
    if raw_channel is not None:
        try:
            channel = Channel(str(raw_channel).strip().lower())
        except ValueError:
            row.fail("channel", "invalid_channel", raw_channel, f"{_shorten(raw_channel)!r} is not a channel; use one of {', '.join(c.value for c in Channel)}")
    if channel not in CONNECTED_CHANNELS:
        row.fail("channel", "channel_not_connected", channel.value, f"{channel.value} is not connected yet; use {', '.join(sorted(c.value for c in CONNECTED_CHANNELS))}")

    template, config = _template(row, channel, directory)
    if row.get("template id") is not None:
        # A row that names a template takes its text from it: the row's own text is ignored (spec §1).
        text = config.get("text")
        if template is not None and text is None:
            row.fail("template id", "template_without_text", template.id, f"template {template.id} has no text for {channel.value}")
    else:
        text = cell_text(row.get("text"))
        if text is None:
            row.fail("text", "missing_text", None, "is empty; write the message text")

    validity = int(config.get("lifetime_minutes") or DEFAULT_VALIDITY)
    raw_validity = row.get("validity period")
    if raw_validity is not None:
        try:
            validity = int(float(str(raw_validity)))
            if float(str(raw_validity)) != validity:
                raise ValueError
        except ValueError:
            row.fail("validity period", "invalid_validity_period", raw_validity, f"{_shorten(raw_validity)!r} is not a whole number of minutes")
        else:
            low, high = VALIDITY_RANGE
            if not low <= validity <= high:
                row.fail("validity period", "validity_period_out_of_range", raw_validity, f"{validity} is outside {low}–{high} minutes")

    variables = None
    raw_variables = row.get("variables")
    if raw_variables is not None:
        try:
            variables = json.loads(str(raw_variables))
            if not isinstance(variables, dict):
                raise ValueError
        except ValueError:
            row.fail("variables", "invalid_variables", raw_variables, 'is not a JSON object like {"name": "Anna"}')

    if text is not None and not row.errors:
        try:
            text = fill(text, variables)
        except CompositionError as exc:
            column = "variables" if exc.variable else "text"
            row.fail(column, "missing_variable" if exc.variable else "invalid_placeholder", exc.variable or text, str(exc))

    use_short_links = False
    raw_short = row.get("use short links")
    if raw_short is not None:
        try:
            use_short_links = parse_bool(raw_short)
        except ValueError:
            row.fail("use short links", "invalid_boolean", raw_short, f"{_shorten(raw_short)!r} is not true or false (also 1/0, yes/no)")

    sender = cell_text(row.get("from"))
    if sender is not None and directory is not None and (sender, channel.value) not in directory.senders:
        row.fail("from", "unknown_sender", sender,
                 f'sender "{sender}" is not registered for {channel.value}: register it with notiflow sender add "{sender}" --channel {channel.value}')
    sender = sender or config.get("sender") or default_sender

    if row.errors:
        return row.errors
    return ValidRow(
        row=row.number,
        recipient=recipient,
        channel=channel,
        text=text or "",
        sender=sender,
        time_zone=zone,
        validity_period=validity,
        external_id=cell_text(row.get("external id")),
        bulk_id=cell_text(row.get("bulk id")),
        group_id=cell_text(row.get("group id")),
        flow_id=cell_text(row.get("flow id")),
        variables=variables,
        template_id=template.id if template else None,
        template_name=template.name if template else None,
        use_short_links=use_short_links,
    )


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
    raise ValueError(f"{value!r} is not a boolean")


def _template(row: _Row, channel: Channel, directory: Directory | None) -> tuple[TemplateView | None, dict[str, Any]]:
    """The stored template the row names, and its configuration for the row's channel."""
    raw = row.get("template id")
    if raw is None:
        return None, {}
    try:
        template_id = int(float(str(raw)))
    except ValueError:
        row.fail("template id", "invalid_template_id", raw, f"{_shorten(raw)!r} is not a template id (a whole number)")
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
