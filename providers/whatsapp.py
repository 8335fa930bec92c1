"""WhatsApp through Meta's Cloud API (kind "whatsapp"): `POST /{phone-number-id}/messages`, one message a request,
status webhooks (sent, delivered, read, failed).

The account: `username` is the business phone number's id, `password` the access token (a system user's),
`url` the Graph API with its version (default https://graph.facebook.com/v21.0), `options` below. The app's
webhook (field `messages`) is this instance's /dlr/{instance}?secret=….

A message with a `template name` is a template message: its `language` (required), its components from
`template data` (a JSON list of Cloud API components as is, or a JSON object whose values fill the body's
{{1}}, {{2}}… in order) and `media url` as the header's image, video or document (by `message type`, else the
URL's extension). The Cloud API has no template namespace (the retired On-Premises API had one): the
`templatenamespace` param is not sent.

The 24-hour rule (spec §4): free text (no template name) may only go within 24 hours of the user's last reply.
Meta answers 131047 when it does not; we refuse before any request unless the message's `last reply at` param
(ISO 8601 or Unix seconds) says the user replied within 24 h. Nothing in notiflow records replies yet (the
webhook's inbound `messages` are not delivery reports), so a customer that knows the time passes it along.

Send answers (`{"error": {"code": …, "message": …, "error_data": {"details": …}}}`):

| code                              | becomes                      | reason recorded                                  |
|-----------------------------------|------------------------------|--------------------------------------------------|
| 200 with messages[0].id           | SENT (id: the wamid)         | accepted by the provider                         |
| 131047                            | refused → ERROR              | outside the 24-hour window: only a template     |
| 131026, 133010                    | refused → ERROR              | the number cannot receive WhatsApp messages     |
| 131050                            | refused → ERROR              | the user stopped marketing messages             |
| 131049                            | refused → ERROR              | Meta chose not to deliver (per-user marketing limit) |
| 132000, 132001, 132005, 132007, 132012, 132015, 132016 | refused → ERROR | the template's problem (params, missing, paused…) |
| 100, 131008, 131009, 131021, 131051 and other 4xx | refused → ERROR | Meta's message and details                |
| 4, 80007, 130429, 131048, 131056, HTTP 429 | ProviderUnavailable (Retry-After, else options.retry_after) | — |
| 0, 3, 10, 190, 131005, 131031, 200–299 | login refused          | —                                                |
| 1, 2, 131000, 131016, HTTP 5xx; a timeout | ProviderUnavailable; outcome unknown on timeout | — |

Status webhooks (`entry[].changes[].value.statuses[]`):

| status    | ours        | reason                                   |
|-----------|-------------|------------------------------------------|
| sent      | SENT        | sent to WhatsApp                         |
| delivered | DELIVERED   | delivered to the device                  |
| read      | READ        | read by the user                         |
| failed    | UNDELIVERED | errors[0]: code, title and details       |
| others (deleted, warning) | — (ignored)   |                                          |

Limits: 80 messages a second per business number by default (Meta raises it to 1,000 on request:
options.per_second), text bodies up to 4,096 characters.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import httpx
from pydantic import Field

from models.settings import Settings
from models.status import Channel, MessageStatus
from providers.account_options import AccountOptions, ProviderAccountError, endpoint, read_options, secret
from providers.base import Acceptance, Capabilities, OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports, StatusReport
from providers.per_message import Outcome, PerMessageProvider, as_mapping, json_object

DEFAULT_URL = "https://graph.facebook.com/v21.0"
TEXT_LIMIT = 4096
SERVICE_WINDOW = timedelta(hours=24)

THROTTLED = frozenset({4, 80007, 130429, 131048, 131056})
LOGIN_REFUSED = frozenset({0, 3, 10, 190, 131005, 131031}) | frozenset(range(200, 300))
TRANSIENT = frozenset({1, 2, 131000, 131016})
REFUSALS: dict[int, str] = {
    131047: "outside WhatsApp's 24-hour window since the user's last reply: only an approved template may be sent",
    131026: "the number cannot receive this message (not on WhatsApp, or an old WhatsApp)",
    133010: "the number is not registered on WhatsApp",
    131050: "the user stopped marketing messages from this business",
    131049: "Meta chose not to deliver it (the user's marketing message limit)",
    132000: "the template's parameters do not match its placeholders",
    132001: "the template does not exist in that language, or is not approved",
    132005: "the template's text with its parameters is too long",
    132007: "the template's content breaks WhatsApp's policy",
    132012: "a template parameter has the wrong format",
    132015: "the template is paused for low quality",
    132016: "the template is disabled for low quality",
}
STATUSES: dict[str, MessageStatus] = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "failed": MessageStatus.UNDELIVERED,
}
_MEDIA_BY_EXTENSION = {"jpg": "image", "jpeg": "image", "png": "image", "mp4": "video", "3gp": "video"}


class WhatsAppOptions(AccountOptions):
    """Options of a whatsapp account."""

    in_flight: int = Field(default=8, ge=1, le=64, description="Requests at once.")
    per_second: float = Field(default=80.0, gt=0, le=1000, description="Messages a second (Meta's default is 80 a number).")
    retry_after: float = Field(default=5.0, gt=0, le=3600, description="Seconds to hold the account when throttled with no Retry-After.")
    timeout: float = Field(default=10.0, gt=0, le=60)


class WhatsAppCloud(PerMessageProvider):
    """One WhatsApp business phone number on the Cloud API."""

    kind = "whatsapp"
    capabilities = Capabilities(
        channels=frozenset({Channel.WHATSAPP}),
        batch_size=80,
        in_flight=1,  # the adapter spreads a batch over its own requests
        per_second=80.0,
        max_text_chars=TEXT_LIMIT,
        reports=Reports.PUSH,
        lookup=False,
    )

    def __init__(self, name: str, phone_number_id: str, token: str, *, base_url: str = DEFAULT_URL,
                 options: WhatsAppOptions | None = None, transport: httpx.BaseTransport | None = None,
                 now: Any = None):
        options = options or WhatsAppOptions()
        super().__init__(name, base_url.rstrip("/") + "/", requests_in_flight=options.in_flight, timeout=options.timeout,
                         transport=transport)
        self.phone_number_id = phone_number_id
        self._token = token
        self.options = options
        self._now = now or (lambda: datetime.now(UTC))
        self.capabilities = replace(type(self).capabilities, per_second=options.per_second,  # type: ignore[misc]
                                    batch_size=max(1, min(1000, round(options.per_second))))

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        options = read_options(cls.kind, name, WhatsAppOptions, account.options)
        token = secret(cls.kind, name, account, "the Cloud API access token")
        if not account.username:
            raise ProviderAccountError(f"the whatsapp provider account {name!r} has no username: set it to the business "
                                       "phone number's id (WhatsApp Manager, API setup)")
        return cls(name, str(account.username), token, base_url=endpoint(cls.kind, name, account, DEFAULT_URL), options=options)

    def _refusal(self, message: OutgoingMessage) -> str | None:
        if message.params.get("template name"):
            if not message.params.get("language"):
                return "a WhatsApp template message needs its language (the `language` param, e.g. en_US or ru)"
            try:
                _components(message)
            except ValueError as exc:
                return str(exc)
            return None
        if not message.text.strip():
            return "the text is empty: name an approved template in `template name` or give a text"
        replied = _last_reply(message.params.get("last reply at"))
        if replied is None or self._now() - replied > SERVICE_WINDOW:
            when = "is not known" if replied is None else f"was at {replied:%Y-%m-%d %H:%M} UTC"
            return (f"outside WhatsApp's 24-hour window: the user's last reply {when}, so only an approved template may "
                    "be sent; name it in `template name`")
        return super()._refusal(message)

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        try:
            response = self._exchange("POST", f"{self.phone_number_id}/messages",
                                      headers={"Authorization": f"Bearer {self._token}"}, json=self._body(message))
        except ProviderUnavailable as fault:
            return Outcome(fault=fault)
        answer = json_object(response)
        messages = answer.get("messages")
        if response.status_code == 200 and isinstance(messages, list) and messages and isinstance(messages[0], Mapping) \
                and messages[0].get("id"):
            return Outcome(Acceptance(ref=message.ref, provider_message_id=str(messages[0]["id"])))
        error = as_mapping(answer.get("error"))
        code = error.get("code") if isinstance(error.get("code"), int) else None
        said = _said(error) or f"HTTP {response.status_code}"
        if response.status_code == 429 or code in THROTTLED:
            wait = response.headers.get("Retry-After")
            return Outcome(fault=ProviderUnavailable(f"{self.name}: WhatsApp throttled the number ({said})",
                                                     retry_after=float(wait) if wait else self.options.retry_after))
        if response.status_code >= 500 or code in TRANSIENT:
            return Outcome(fault=ProviderUnavailable(f"{self.name}: WhatsApp could not take it now ({said})"))
        if response.status_code == 401 or code in LOGIN_REFUSED:
            return Outcome(refused_login=ProviderRejected(
                f"{self.name}: WhatsApp refused the account ({said}); check the access token in its password and the "
                "phone number id in its username"))
        reason = REFUSALS.get(code) if code is not None else None
        return Outcome(Acceptance(ref=message.ref, provider_message_id=None,
                                  error=(f"{reason} ({code})" if reason else f"WhatsApp refused it: {said}")[:300]))

    def _body(self, message: OutgoingMessage) -> dict[str, Any]:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual",
                                "to": message.recipient.lstrip("+")}
        name = message.params.get("template name")
        if name:
            template: dict[str, Any] = {"name": str(name), "language": {"code": str(message.params["language"])}}
            components = _components(message)
            if components:
                template["components"] = components
            body.update(type="template", template=template)
        else:
            body.update(type="text", text={"preview_url": False, "body": message.text})
        return body

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        """A Cloud API webhook: its statuses become reports; inbound messages and other fields are no reports."""
        if not isinstance(payload, Mapping) or payload.get("object") != "whatsapp_business_account" \
                or not isinstance(payload.get("entry"), list):
            raise ValueError('a WhatsApp webhook is {"object": "whatsapp_business_account", "entry": [...]}')
        reports = []
        for entry in payload["entry"]:
            for change in entry.get("changes", []) if isinstance(entry, Mapping) else []:
                value = change.get("value") if isinstance(change, Mapping) else None
                for item in value.get("statuses", []) if isinstance(value, Mapping) else []:
                    report = _report(item)
                    if report is not None:
                        reports.append(report)
        return reports


def _components(message: OutgoingMessage) -> list[Any]:
    """The template's components from `template data` and `media url`; ValueError saying what is wrong."""
    data = message.params.get("template data")
    if isinstance(data, str) and data.strip():
        try:
            data = json.loads(data)
        except ValueError:
            raise ValueError('`template data` is not JSON: write a list of components or {"1": "value", ...}') from None
    components: list[Any]
    if data in (None, ""):
        components = []
    elif isinstance(data, list):
        components = list(data)
    elif isinstance(data, Mapping):
        components = [{"type": "body", "parameters": [{"type": "text", "text": str(v)} for v in data.values()]}] if data else []
    else:
        raise ValueError('`template data` is a JSON list of components or an object {"1": "value", ...}')
    media = message.params.get("media url")
    if media and not any(isinstance(c, Mapping) and c.get("type") == "header" for c in components):
        kind = str(message.params.get("message type") or "")
        if kind not in ("image", "video", "document"):
            kind = _MEDIA_BY_EXTENSION.get(str(media).rsplit(".", 1)[-1].lower().split("?")[0], "document")
        components.insert(0, {"type": "header", "parameters": [{"type": kind, kind: {"link": str(media)}}]})
    return components


def _last_reply(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _report(item: Any) -> StatusReport | None:
    if not isinstance(item, Mapping) or not item.get("id"):
        return None
    status = STATUSES.get(str(item.get("status")))
    if status is None:
        return None
    description = {"sent": "sent to WhatsApp", "delivered": "delivered to the device", "read": "read by the user"}.get(
        str(item["status"]), "")
    if status is MessageStatus.UNDELIVERED:
        errors = item.get("errors") if isinstance(item.get("errors"), list) else []
        first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
        code = first.get("code")
        known = REFUSALS.get(code) if isinstance(code, int) else None
        description = f"not delivered: {known} ({code})" if known else f"not delivered: {_said(first) or 'WhatsApp gave no reason'}"
    try:
        at = datetime.fromtimestamp(int(item.get("timestamp")), UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        at = datetime.now(UTC)
    return StatusReport(provider_message_id=str(item["id"]), status=status, description=description[:300], at=at)


def _said(error: Mapping[str, Any]) -> str:
    """Meta's own words for an error: its message (or title), its details, its code."""
    details = error.get("error_data", {}).get("details") if isinstance(error.get("error_data"), Mapping) else None
    words = str(error.get("message") or error.get("title") or "")
    if details and details not in words:
        words = f"{words}: {details}" if words else str(details)
    if error.get("code") is not None and words:
        words = f"{words} (code {error['code']})"
    return words
