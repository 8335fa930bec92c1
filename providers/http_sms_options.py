"""The options of an HTTP SMS aggregator account (kind "http"): how a message becomes a request, and where the
answer keeps the provider's id, its error and its statuses. Read once, when the account is, with errors that
name the option and say what to write, so a new aggregator is configured, not programmed.

Templates (`fields`, `envelope`, paths) hold placeholders in braces, filled from the message being sent:
`{ref}` (our idempotency key), `{recipient}` (E.164, with its +), `{recipient_digits}` (the same without the
+), `{text}`, `{sender}`, `{encoding}` (GSM-7 or UCS-2), `{parts}`, `{report_url}` (this instance's webhook,
its secret included), `{username}` (the account's). `{{` and `}}` are literal braces. A value that is one
placeholder alone keeps the value's type (`{parts}` is a number), and is left out of the request when the
value is empty (a message with no sender sends no `from`). Anything else is sent as written.

Paths say where a value is in a JSON answer: dotted steps, each a key, a list index, or `[key=value]` (the
first item of a list whose `key` is `value`), e.g. `messages.{index}.id`, `sms.{recipient_digits}.sms_id`,
`messages.[to={recipient_digits}].messageId`. An `id_path` of `{ref}` means the provider gives no id: our
reference is the id its reports carry back (the account must send `{ref}` in a field that they echo).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import NotiflowError
from models.status import MessageStatus

# Our status words, as an account's status_map names them → the status they record.
STATUS_WORDS: dict[str, MessageStatus] = {
    "queued": MessageStatus.QUEUED,
    "sent": MessageStatus.SENT,
    "pending": MessageStatus.PENDING,
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "expired": MessageStatus.EXPIRED,
    "error": MessageStatus.ERROR,
    "read": MessageStatus.READ,
}
StatusWord = Literal["queued", "sent", "pending", "delivered", "undelivered", "expired", "error", "read"]
Method = Literal["GET", "POST"]
BodyKind = Literal["json", "form", "query"]

# Which placeholders each template may use.
MESSAGE_NAMES = frozenset({"ref", "recipient", "recipient_digits", "text", "sender", "encoding", "parts", "report_url",
                           "username"})
ACCOUNT_NAMES = frozenset({"report_url", "username"})  # the envelope of a batch, and every poll or lookup request
ANSWER_NAMES = frozenset({"index", "ref", "recipient", "recipient_digits"})  # id_path, error_path

REF_ID = "{ref}"  # the id_path that makes our reference the provider id

_TOKEN = re.compile(r"\{\{|\}\}|\{(\w+)\}")
_WHOLE = re.compile(r"\{(\w+)\}")
# Options whose value is a mapping or a list: given as JSON text (the CLI's --option KEY=VALUE), they are parsed.
_STRUCTURED = frozenset({"fields", "envelope", "accepted_statuses", "status", "status_map", "report", "lookup",
                         "error_path"})

HINTS: dict[str, str] = {
    "method": 'write "POST" or "GET"',
    "path": 'the request\'s path after the account url, e.g. "/sms/send" (may use {username})',
    "body": 'write "json", "form" or "query" (the fields in the URL\'s query)',
    "fields": 'a mapping of the request\'s field names to values, e.g. {"to": "{recipient}", "text": "{text}", '
              f'"from": "{{sender}}"}}; placeholders: {", ".join(sorted(MESSAGE_NAMES))}',
    "envelope": 'the request\'s own fields around a batch\'s list, e.g. {"bulkId": "x"}; '
                f'placeholders: {", ".join(sorted(ACCOUNT_NAMES))}',
    "auth": 'write "none", "bearer" (the password as a token), "basic" (username and password), '
            '"query:PARAM" (the password in that query parameter) or "header:NAME" (in that header)',
    "batch": 'write false (one message a request) or the name of the JSON list field that carries several, e.g. "messages"',
    "batch_size": "messages in one request (batch) or in one send call (one a request), 1 to 1000",
    "id_path": 'where the provider\'s message id is in its answer, e.g. "messages.{index}.id" or '
               '"sms.{recipient_digits}.sms_id"; "{ref}" if it gives none and its reports carry our reference',
    "error_path": 'where a refused message\'s reason is in the answer (a path or a list of paths), e.g. "messages.{index}.error"',
    "accepted_statuses": "the HTTP codes that mean the request was taken, e.g. [200, 201, 202]",
    "status": 'how to poll statuses: {"path": "/sms/status", "ids_field": "sms_id", "status_path": "sms.{id}.status"}',
    "status_map": 'the provider\'s status words → ours, e.g. {"103": "delivered", "104": "expired"}; ours: '
                  + ", ".join(STATUS_WORDS),
    "report": 'where a pushed report keeps its parts: {"id_path": "id", "status_path": "status", "reason_path": "error"} '
              '(and "items_path" when a payload holds a list)',
    "lookup": 'how to ask what became of a message by our reference: {"path": "/sms/by-ref", "ref_field": "ref", '
              '"id_path": "id"}',
    "max_parts": "the most SMS parts of one message the account sends, 1 or more",
    "in_flight": "requests at once, 1 to 64",
    "per_second": "the most messages per second, above 0",
    "timeout": "seconds per request, above 0 and at most 60",
}


class HttpSmsAccountError(NotiflowError):
    """An HTTP SMS aggregator account's options cannot describe its requests."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _json_text(cls, data: Any) -> Any:
        """Options given on the command line (`--option fields={...}`) arrive as text: a structured option's
        JSON object or list is read as such (paths and templates stay text)."""
        if not isinstance(data, Mapping):
            return data
        read = dict(data)
        for key, value in read.items():
            if key in _STRUCTURED and isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
                try:
                    read[key] = json.loads(value)
                except ValueError:
                    pass  # validated as it is below, with the option's hint
        return read


class StatusPoll(_Options):
    """How statuses are asked: one request per `batch_size` ids (or one per id), statuses read per id."""

    method: Method = "GET"
    path: str
    body: BodyKind = "query"
    fields: dict[str, Any] = Field(default_factory=dict)
    # The request field that carries the ids, as a JSON list, a comma-joined text, or one id a request
    # (then the path may hold `{id}` instead).
    ids_field: str | None = None
    ids_as: Literal["list", "comma", "one"] = "comma"
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Where each id's status word is in the answer (`{id}`, `{index}`), and its reason and time.
    status_path: str
    reason_path: str | None = None
    at_path: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> StatusPoll:
        if self.ids_field is None and not (self.ids_as == "one" and "{id}" in self.path):
            raise ValueError('name the request field that carries the ids ("ids_field"), or ask one id a request '
                             '("ids_as": "one") with {id} in the path')
        if self.ids_as == "list" and self.body != "json":
            raise ValueError('ids "list" goes in a JSON body: write "body": "json", or "ids_as": "comma"')
        _check_method(self.method, self.body)
        _check_template(self.fields, ACCOUNT_NAMES, "fields")
        _check_template(self.path, ACCOUNT_NAMES | {"id"}, "path")
        for name in ("status_path", "reason_path", "at_path"):
            _check_path(getattr(self, name), frozenset({"id", "index"}), name)
        return self


class Report(_Options):
    """Where a pushed report (a webhook's JSON or form payload) keeps the provider id, the status and the reason."""

    items_path: str | None = None  # where the list of reports is; none: the payload is one report (or a list of them)
    id_path: str
    status_path: str
    reason_path: str | None = None
    ref_path: str | None = None
    at_path: str | None = None

    @model_validator(mode="after")
    def _paths(self) -> Report:
        for name in ("items_path", "id_path", "status_path", "reason_path", "ref_path", "at_path"):
            _check_path(getattr(self, name), frozenset(), name)
        return self


class Lookup(_Options):
    """How a message is asked for by our reference (one request per reference)."""

    method: Method = "GET"
    path: str
    body: BodyKind = "query"
    fields: dict[str, Any] = Field(default_factory=dict)
    ref_field: str | None = None
    id_path: str

    @model_validator(mode="after")
    def _consistent(self) -> Lookup:
        if self.ref_field is None and "{ref}" not in self.path:
            raise ValueError('name the request field that carries our reference ("ref_field"), or put {ref} in the path')
        _check_method(self.method, self.body)
        _check_template(self.fields, ACCOUNT_NAMES, "fields")
        _check_template(self.path, ACCOUNT_NAMES | {"ref"}, "path")
        _check_path(self.id_path, frozenset({"ref"}), "id_path")
        return self


class HttpSmsOptions(_Options):
    """An account's options: its send request, its answer, its statuses and its limits."""

    method: Method = "POST"
    path: str = ""
    body: BodyKind = "json"
    fields: dict[str, Any] = Field(min_length=1)
    envelope: dict[str, Any] = Field(default_factory=dict)
    auth: str = "none"
    batch: str | None = None
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    id_path: str
    error_path: list[str] = Field(default_factory=list)
    accepted_statuses: frozenset[int] = frozenset({200, 201, 202})
    status: StatusPoll | None = None
    status_map: dict[str, StatusWord] = Field(default_factory=dict)
    report: Report | None = None
    lookup: Lookup | None = None
    max_parts: int | None = Field(default=None, ge=1)
    in_flight: int = Field(default=4, ge=1, le=64)
    per_second: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=10.0, gt=0, le=60)

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if value is False or value is None or (isinstance(value, str) and value.strip() in ("", "false")):
            return None
        if value is True or not isinstance(value, str):
            raise ValueError("not a field name")
        return value

    @field_validator("error_path", mode="before")
    @classmethod
    def _error_paths(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("status_map", mode="before")
    @classmethod
    def _status_words(cls, value: Any) -> Any:
        """The provider's words are compared as text, whatever their case: 103, "103" and "Delivered" all match."""
        if not isinstance(value, Mapping):
            return value
        return {word_key(word): str(ours).strip().lower() for word, ours in value.items()}

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        scheme, _, name = value.partition(":")
        if (scheme in ("none", "bearer", "basic") and not name) or (scheme in ("query", "header") and name.strip()):
            return value
        raise ValueError(f"{value!r} is not an auth")

    @model_validator(mode="after")
    def _consistent(self) -> HttpSmsOptions:
        _check_method(self.method, self.body)
        if self.batch is not None and self.body != "json":
            raise ValueError('a batch is a JSON list: write "body": "json", or "batch": false')
        if self.envelope and self.batch is None:
            raise ValueError('"envelope" surrounds a batch: name the list field in "batch", or put the fields in "fields"')
        _check_template(self.fields, MESSAGE_NAMES, "fields")
        _check_template(self.envelope, ACCOUNT_NAMES, "envelope")
        _check_template(self.path, frozenset({"username"}), "path")
        if "://" in self.path:
            raise ValueError(f'"path" {self.path!r} follows the account\'s url: put the address in the url and the rest here')
        if self.id_path != REF_ID:
            _check_path(self.id_path, ANSWER_NAMES, "id_path")
        for path in self.error_path:
            _check_path(path, ANSWER_NAMES, "error_path")
        if not self.accepted_statuses or any(not 100 <= code <= 599 for code in self.accepted_statuses):
            raise ValueError('"accepted_statuses" lists HTTP codes, e.g. [200, 201, 202]')
        if (self.status or self.report) and not self.status_map:
            raise ValueError('"status_map" is needed to read statuses: map the provider\'s status words to ours, '
                             'e.g. {"delivered": "delivered", "failed": "undelivered"}')
        if self.report is None and "report_url" in _names(self.fields) | _names(self.envelope):
            raise ValueError('the fields send {report_url}, but nothing says how to read the reports pushed there: '
                             'add "report" (where the id, status and reason are in its payload)')
        return self

    @property
    def auth_scheme(self) -> str:
        return self.auth.partition(":")[0]

    @property
    def auth_name(self) -> str:
        return self.auth.partition(":")[2].strip()


def read_options(name: str, options: Mapping[str, Any]) -> HttpSmsOptions:
    """The account's options, or HttpSmsAccountError naming each wrong option and what to write."""
    try:
        return HttpSmsOptions.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(step) for step in error["loc"])
            top = str(error["loc"][0]) if error["loc"] else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            hint = HINTS.get(top, "")
            if error["type"] == "extra_forbidden":
                hint = f"known options: {', '.join(HttpSmsOptions.model_fields)}" if len(error["loc"]) == 1 else ""
            problems.append(f"options.{where}: {message}" + (f" ({hint})" if hint and hint not in message else "")
                            if where else f"options: {message}")
        raise HttpSmsAccountError(
            f"the http provider account {name!r} cannot be used: " + "; ".join(problems)
            + ". Fix its options in its provider account block (Prefect UI, Blocks)."
        ) from None


def word_key(word: Any) -> str:
    """A provider status word as status_map keys are kept: text, trimmed, lower case."""
    return str(word).strip().lower()


# --- templates -------------------------------------------------------------------------------------------

def render(template: Any, values: Mapping[str, Any]) -> Any:
    """`template` filled from `values`: texts get their placeholders replaced, mappings and lists are filled
    item by item, other values stay. A text that is one placeholder alone becomes the value itself."""
    if isinstance(template, str):
        whole = _WHOLE.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return _TOKEN.sub(lambda m: str(values[m.group(1)]) if m.group(1) else m.group(0)[0], template)
    if isinstance(template, Mapping):
        filled = {}
        for key, item in template.items():
            value = render(item, values)
            if isinstance(item, str) and _WHOLE.fullmatch(item) and value in ("", None):
                continue  # an empty optional value (no sender) is left out, not sent empty
            filled[key] = value
        return filled
    if isinstance(template, list):
        return [render(item, values) for item in template]
    return template


def _names(template: Any) -> set[str]:
    if isinstance(template, str):
        return {m.group(1) for m in _TOKEN.finditer(template) if m.group(1)}
    if isinstance(template, Mapping):
        return set().union(*(_names(item) for item in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(_names(item) for item in template)) if template else set()
    return set()


def _check_template(template: Any, allowed: frozenset[str], option: str) -> None:
    unknown = _names(template) - allowed
    if unknown:
        raise ValueError(f"{option} uses {', '.join('{' + n + '}' for n in sorted(unknown))}, which is not known here; "
                         f"placeholders: {', '.join('{' + n + '}' for n in sorted(allowed))} (write {{{{ and }}}} for a brace)")


def _check_path(path: str | None, allowed: frozenset[str], option: str) -> None:
    if path is None:
        return
    if not path.strip() or any(not step for step in path.split(".")):
        raise ValueError(f"{option} {path!r} has an empty step; write dotted keys like \"messages.0.id\"")
    _check_template(path, allowed, option)


def _check_method(method: str, body: str) -> None:
    if method == "GET" and body != "query":
        raise ValueError(f'a GET request has no {body} body: write "body": "query", or "method": "POST"')


# --- reading answers -------------------------------------------------------------------------------------

class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_SELECT = re.compile(r"\[([^=\]]+)=([^\]]*)\]")


def find(document: Any, path: str, values: Mapping[str, Any] | None = None) -> Any:
    """The value at `path` in `document` (its placeholders filled from `values`), or MISSING."""
    current = document
    for raw in path.split("."):
        step = render(raw, values or {}) if "{" in raw else raw
        step = str(step)
        selector = _SELECT.fullmatch(step)
        if selector:
            if not isinstance(current, list):
                return MISSING
            key, wanted = selector.groups()
            current = next((item for item in current if isinstance(item, Mapping) and str(item.get(key)) == wanted), MISSING)
        elif isinstance(current, Mapping):
            current = current.get(step, MISSING)
        elif isinstance(current, list) and re.fullmatch(r"-?\d+", step):
            index = int(step)
            current = current[index] if -len(current) <= index < len(current) else MISSING
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def text_at(document: Any, path: str | None, values: Mapping[str, Any] | None = None) -> str | None:
    """The value at `path` as text, or None when it is missing, null or empty."""
    if path is None:
        return None
    value = find(document, path, values)
    if value is MISSING or value is None or value == "" or value is False:
        return None
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False)[:300]
    return str(value)
