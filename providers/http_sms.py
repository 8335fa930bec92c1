"""SMS through an HTTP aggregator (kind "http"): the request and the answer are mapped by the account's options
(providers/http_sms_options.py), so SMS.ru, SMSC.ru, a Twilio-like or an Infobip-like API is configured, not
programmed.

Receipt codes: the account's `status_map` turns the provider's status words (from a poll or a pushed report)
into ours; unknown words are logged and change nothing.

| our word    | status      | meaning                                                        |
|-------------|-------------|----------------------------------------------------------------|
| queued      | QUEUED      | in the aggregator's queue (never moves a SENT message back)     |
| sent        | SENT        | handed to the operator                                         |
| pending     | PENDING     | being delivered                                                |
| delivered   | DELIVERED   | delivered                                                      |
| read        | READ        | read (messengers behind an SMS API)                            |
| undelivered | UNDELIVERED | not delivered (the reason the provider gives is kept)          |
| expired     | EXPIRED     | its validity period passed at the operator                     |
| error       | ERROR       | refused by the aggregator or the operator                      |

HTTP answers to a send:
- a code in `accepted_statuses` (200, 201, 202): each message's id is at `id_path`; a message without one is
  refused with the reason at `error_path` (SMS.ru answers 200 with a per-number `status_text`), or, when
  there is none, with the answer itself: an id the options cannot find is a configuration error to see, not
  a reason to send the message again and again;
- 401, 403: the login is refused (ProviderRejected; the reason never holds the password or the webhook secret);
- 429: ProviderUnavailable with the Retry-After seconds (1 s when it names none): the dispatcher holds this
  provider meanwhile and spends no attempt;
- 5xx, no connection: ProviderUnavailable, tried again later; a timeout, or a connection lost after the
  request went: outcome unknown (the message is asked for by reference when `lookup` is configured, else
  sent again with the same `{ref}`, which aggregators that take a client reference use to drop the copy);
- another code (400, 404, 422): one message a request, that message is refused with the reason at
  `error_path` (or the answer); a batch request, the whole batch is refused.

One message a request (`batch` false): a send call is spread over `in_flight` requests at once inside the
adapter, like Kannel's, so the dispatcher makes one call at a time; with `per_second` a call carries about a
second's messages, so the dispatcher's pacing (a Prefect rate limit, per call) keeps the burst small.
A batch request (`batch`: the JSON list field): the dispatcher makes `in_flight` calls at once.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Self
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from models.settings import Settings
from models.signing import webhook_secret
from models.status import Channel
from providers.base import (
    Acceptance,
    Capabilities,
    LookupUnsupported,
    OutgoingMessage,
    ProviderRejected,
    ProviderUnavailable,
    Reports,
    StatusReport,
)
from providers.per_message import Outcome, PooledHttpProvider, send_each, settle
from providers.http_sms_options import (
    MISSING,
    REF_ID,
    STATUS_WORDS,
    HttpSmsAccountError,
    HttpSmsOptions,
    find,
    read_options,
    render,
    text_at,
    word_key,
)

logger = logging.getLogger("notiflow.providers.http_sms")

# A send call's requests start within this many seconds; later ones wait for the next call. Together with the
# per-request timeout this keeps one call well inside the hand-over deadline (20 s), after which another
# process may reconcile its messages.
BATCH_SECONDS = 10.0
# A 429 that names no Retry-After holds the provider this long.
DEFAULT_RETRY_AFTER = 1.0
ANSWER_EXCERPT = 200


class HttpSmsProvider(PooledHttpProvider):
    """One account at an HTTP SMS aggregator, its requests and answers mapped by its options."""

    kind = "http"
    capabilities = Capabilities(
        channels=frozenset({Channel.SMS}),
        batch_size=100,
        in_flight=1,
        reports=Reports.NONE,
        lookup=False,
    )

    def __init__(
        self,
        name: str,
        base_url: str,
        options: HttpSmsOptions,
        *,
        username: str | None = None,
        password: str | None = None,
        sender: str = "",
        report_url: str = "",
        transport: httpx.BaseTransport | None = None,
    ):
        split = urlsplit(base_url)
        super().__init__(name, f"{split.scheme}://{split.netloc}", requests_in_flight=options.in_flight, timeout=options.timeout,
                         transport=transport)
        # The account url's own path (https://api.example.com/v1) comes before every request's.
        self._prefix = split.path.rstrip("/")
        self.options = options
        self.username = username or ""
        self._password = password or ""
        self.sender = sender
        # This instance's webhook, its secret in the query: what `{report_url}` sends.
        self.report_url = report_url
        self._secrets = [s for s in (self._password, report_url.rpartition("secret=")[2]) if s]
        self._auth_headers, self._auth_params = self._credentials()
        self._account_values = {"username": self.username, "report_url": report_url}
        self.capabilities = replace(  # type: ignore[misc]
            type(self).capabilities,
            batch_size=_batch_size(options),
            in_flight=options.in_flight if options.batch else 1,
            per_second=options.per_second,
            max_parts=options.max_parts,
            reports=_reports(options),
            lookup=options.lookup is not None,
        )

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        if not account.url or not str(account.url).startswith(("http://", "https://")):
            raise HttpSmsAccountError(
                f"the http provider account {name!r} needs url: the aggregator's address, e.g. https://sms.ru "
                f"(not {account.url!r}); set it in its provider account block"
            )
        options = read_options(name, account.options or {})
        password = account.password.get_secret_value() if account.password is not None else None
        if options.auth_scheme != "none" and not password:
            raise HttpSmsAccountError(f"the http provider account {name!r} authenticates with {options.auth!r} but has no "
                                      "password: set its password (the token or API key) in its provider account block")
        if options.auth_scheme == "basic" and not account.username:
            raise HttpSmsAccountError(f"the http provider account {name!r} uses basic auth but has no username: set it")
        base = (settings.public_url or settings.api_url).rstrip("/")
        report_url = f"{base}/dlr/{quote(name, safe='')}?secret={webhook_secret(name)}"
        return cls(name, account.url, options, username=account.username, password=password,
                   sender=account.sender or "", report_url=report_url)

    # --- sending ----------------------------------------------------------------------------------------

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        mine = list(batch)
        too_long = [self._too_long(m) for m in mine]
        refused = [a for a in too_long if a is not None]
        sendable = [m for m, a in zip(mine, too_long) if a is None]
        if not sendable:
            return refused
        if self.options.batch:
            return refused + self._send_batch(sendable)
        try:
            return refused + self._send_each(sendable)
        except ProviderUnavailable as fault:
            raise ProviderUnavailable(str(fault), retry_after=fault.retry_after, outcome_unknown=fault.outcome_unknown,
                                      answered=refused + fault.answered) from None

    def _too_long(self, message: OutgoingMessage) -> Acceptance | None:
        limit = self.options.max_parts
        if limit is None or message.parts <= limit:
            return None
        return Acceptance(ref=message.ref, provider_message_id=None,
                          error=f"{message.parts} SMS parts, more than the {limit} this account sends (options.max_parts)")

    def _send_batch(self, batch: list[OutgoingMessage]) -> list[Acceptance]:
        """One request carrying the whole batch in the JSON list `options.batch`."""
        options = self.options
        assert options.batch is not None
        values = [self._values(m, index) for index, m in enumerate(batch)]
        payload = {**render(options.envelope, self._account_values),
                   options.batch: [render(options.fields, v) for v in values]}
        response = self._call(options.method, self._path(options.path), options.body, payload, what="send")
        self._raise_for_fault(response, "send")
        answer = _json(response)
        if response.status_code not in options.accepted_statuses:
            reason = (self._error(answer, values[0]) if answer is not MISSING else None) or self._unexplained(response, answer)
            raise ProviderRejected(f"{self.name}: the aggregator refused the batch: {reason}")
        return [self._acceptance(m, v, response, answer) for m, v in zip(batch, values)]

    def _send_each(self, batch: list[OutgoingMessage]) -> list[Acceptance]:
        """One request per message, `in_flight` at once. Answers are returned; a message with no answer (not
        started within BATCH_SECONDS) is left out, so the dispatcher reconciles it. A fault is raised with
        the answers given before it; a refused login refuses what it stopped."""
        return settle(self.name, batch, send_each(self._requests(), batch, self._send_one, start_within=BATCH_SECONDS))

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        options = self.options
        values = self._values(message, 0)
        try:
            response = self._call(options.method, self._path(options.path), options.body, render(options.fields, values),
                                  what="send")
            self._raise_for_fault(response, "send")
        except ProviderUnavailable as exc:
            return Outcome(fault=exc)
        except ProviderRejected as exc:
            return Outcome(refused_login=exc)
        return Outcome(self._acceptance(message, values, response, _json(response)))

    def _acceptance(self, message: OutgoingMessage, values: Mapping[str, Any], response: httpx.Response,
                    answer: Any) -> Acceptance:
        """One message's answer: its id, else the reason it was refused."""
        options = self.options
        if response.status_code in options.accepted_statuses:
            if options.id_path == REF_ID:
                provider_id: str | None = message.ref if answer is MISSING or not self._error(answer, values) else None
            else:
                found = find(answer, options.id_path, values)
                provider_id = str(found) if found not in (MISSING, None, "") and not isinstance(found, Mapping | list) else None
            if provider_id:
                return Acceptance(ref=message.ref, provider_message_id=provider_id)
        reason = (self._error(answer, values) if answer is not MISSING else None) or self._unexplained(response, answer)
        return Acceptance(ref=message.ref, provider_message_id=None, error=reason)

    def _error(self, answer: Any, values: Mapping[str, Any]) -> str | None:
        for path in self.options.error_path:
            reason = text_at(answer, path, values)
            if reason:
                return self._scrub(reason)[:300]
        return None

    def _unexplained(self, response: httpx.Response, answer: Any) -> str:
        if response.status_code in self.options.accepted_statuses:
            what = "is not JSON" if answer is MISSING else f"has no id at options.id_path {self.options.id_path!r}"
            return f"the aggregator's answer (HTTP {response.status_code}) {what}: {self._excerpt(response)}"
        hint = " (is the account's url and options.path the aggregator's send address?)" if response.status_code in (404, 405) else ""
        return f"HTTP {response.status_code}: {self._excerpt(response)}{hint}"

    def _values(self, message: OutgoingMessage, index: int) -> dict[str, Any]:
        return {
            "ref": message.ref, "recipient": message.recipient, "recipient_digits": message.recipient.lstrip("+"),
            "text": message.text, "sender": message.sender or self.sender, "encoding": message.encoding,
            "parts": message.parts, "index": index, **self._account_values,
        }

    # --- statuses -----------------------------------------------------------------------------------------

    def poll(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        status = self.options.status
        if status is None:
            return super().poll(provider_message_ids)
        ids = list(provider_message_ids)
        size = 1 if status.ids_as == "one" else status.batch_size
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        if status.ids_as == "one" and len(chunks) > 1:
            answers = list(self._requests().map(self._poll_chunk, chunks))
        else:
            answers = [self._poll_chunk(chunk) for chunk in chunks]
        return [report for reports in answers for report in reports]

    def _poll_chunk(self, ids: list[str]) -> list[StatusReport]:
        status = self.options.status
        assert status is not None
        payload = dict(render(status.fields, self._account_values))
        if status.ids_field:
            payload[status.ids_field] = ids if status.ids_as == "list" else ",".join(ids)
        path = self._path(status.path, id=ids[0]) if status.ids_as == "one" else self._path(status.path)
        response = self._call(status.method, path, status.body, payload, what="status")
        self._raise_for_fault(response, "status")
        if status.ids_as == "one" and response.status_code == 404:
            return []  # an id the aggregator does not know (yet): asked again at the next poll
        if not 200 <= response.status_code < 300:
            raise ProviderUnavailable(f"{self.name}: status request answered HTTP {response.status_code}: {self._excerpt(response)}")
        answer = _json(response)
        if answer is MISSING:
            raise ProviderUnavailable(f"{self.name}: the status answer is not JSON: {self._excerpt(response)}")
        reports = []
        for index, provider_id in enumerate(ids):
            values = {"id": provider_id, "index": index}
            report = self._report(provider_id, find(answer, status.status_path, values),
                                  text_at(answer, status.reason_path, values), find(answer, status.at_path, values)
                                  if status.at_path else None, None)
            if report is not None:
                reports.append(report)
        return reports

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        """Read a pushed report (a JSON or form payload) with `options.report`; ValueError if it is not one."""
        mapping = self.options.report
        if mapping is None:
            return super().parse_webhook(payload)
        document = _payload(payload)
        items: Any = find(document, mapping.items_path) if mapping.items_path else document
        if isinstance(items, Mapping):
            items = [items]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{self.name}: no reports at options.report.items_path {mapping.items_path!r} in "
                             f"{self._scrub(str(document))[:ANSWER_EXCERPT]}")
        reports: list[StatusReport] = []
        unreadable = 0
        for item in items:
            provider_id = text_at(item, mapping.id_path)
            word = find(item, mapping.status_path)
            if provider_id is None or word is MISSING or word is None:
                unreadable += 1
                continue
            report = self._report(provider_id, word, text_at(item, mapping.reason_path),
                                  find(item, mapping.at_path) if mapping.at_path else None, text_at(item, mapping.ref_path))
            if report is not None:
                reports.append(report)
        if unreadable == len(items):
            raise ValueError(f"{self.name}: a report has its id at {mapping.id_path!r} and its status at "
                             f"{mapping.status_path!r} (options.report); got {self._scrub(str(document))[:ANSWER_EXCERPT]}")
        if unreadable:
            logger.warning("%s: %d of %d pushed reports had no id or status; skipped", self.name, unreadable, len(items))
        return reports

    def _report(self, provider_id: str, word: Any, reason: str | None, at: Any, ref: str | None) -> StatusReport | None:
        if word is MISSING or word is None:
            return None  # the aggregator does not know this id (yet)
        ours = self.options.status_map.get(word_key(word))
        if ours is None:
            logger.warning("%s: the status %r of %s is not in options.status_map; ignored", self.name, word, provider_id)
            return None
        description = self._scrub(reason)[:300] if reason else f"{ours} ({word})"
        return StatusReport(provider_message_id=provider_id, status=STATUS_WORDS[ours], description=description,
                            at=_report_time(at), ref=ref)

    def lookup(self, refs: Sequence[str]) -> list[Acceptance]:
        """What the aggregator has of each reference, when `options.lookup` says how to ask it."""
        if self.options.lookup is None:
            raise LookupUnsupported(f"{self.name} cannot look messages up by reference (no options.lookup)")
        return list(self._requests().map(self._lookup_one, refs))

    def _lookup_one(self, ref: str) -> Acceptance:
        lookup = self.options.lookup
        assert lookup is not None
        payload = dict(render(lookup.fields, self._account_values))
        if lookup.ref_field:
            payload[lookup.ref_field] = ref
        response = self._call(lookup.method, self._path(lookup.path, ref=ref), lookup.body, payload, what="lookup")
        self._raise_for_fault(response, "lookup")
        if response.status_code == 404:
            return Acceptance(ref=ref, provider_message_id=None)
        if not 200 <= response.status_code < 300:
            raise ProviderUnavailable(f"{self.name}: lookup answered HTTP {response.status_code}: {self._excerpt(response)}")
        found = find(_json(response), lookup.id_path, {"ref": ref})
        known = found not in (MISSING, None, "") and not isinstance(found, Mapping | list)
        return Acceptance(ref=ref, provider_message_id=str(found) if known else None, duplicate=known)

    # --- requests -----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: str, payload: Mapping[str, Any], *, what: str) -> httpx.Response:
        """One request with the account's credentials; transport trouble as ProviderUnavailable, never with a secret."""
        params = {**self._auth_params}
        kwargs: dict[str, Any] = {"headers": self._auth_headers}
        if body == "json":
            kwargs["json"] = payload
        elif body == "form":
            kwargs["data"] = {k: _form_value(v) for k, v in payload.items()}
        else:
            params.update({k: _form_value(v) for k, v in payload.items()})
        if params:
            kwargs["params"] = params
        with self._lock:
            self.requests += 1
        started = time.perf_counter()
        try:
            return self._client.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ProviderUnavailable(f"{self.name}: {what} request {method} {path} could not connect ({type(exc).__name__})") from None
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(f"{self.name}: {what} request {method} {path} timed out ({type(exc).__name__}); "
                                      "the aggregator may have taken it", outcome_unknown=True) from None
        except httpx.TransportError as exc:
            # The request may have gone before the connection broke (the exception's request holds the credentials).
            raise ProviderUnavailable(f"{self.name}: {what} request {method} {path} failed ({type(exc).__name__}: "
                                      f"{self._scrub(str(exc))[:ANSWER_EXCERPT]})", outcome_unknown=True) from None
        finally:
            logger.debug("%s %s %s took %.3f s", self.name, method, path, time.perf_counter() - started)

    def _raise_for_fault(self, response: httpx.Response, what: str) -> None:
        """Raise for the answers that are not about one message: throttled, the aggregator's trouble, a refused login."""
        code = response.status_code
        if code == 429:
            raise ProviderUnavailable(f"{self.name}: the aggregator throttled the {what} request (HTTP 429)",
                                      retry_after=_retry_after(response.headers.get("Retry-After")))
        if code >= 500:
            raise ProviderUnavailable(f"{self.name}: the aggregator answered the {what} request with HTTP {code}: "
                                      f"{self._excerpt(response)}")
        if code in (401, 403):
            raise ProviderRejected(
                f"{self.name}: the aggregator refused the account's login (HTTP {code}: {self._excerpt(response)}); check "
                f"its password and options.auth ({self.options.auth!r}) in its provider account block"
            )

    def _credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        scheme, name, secret = self.options.auth_scheme, self.options.auth_name, self._password
        if scheme == "bearer":
            return {"Authorization": f"Bearer {secret}"}, {}
        if scheme == "basic":
            token = base64.b64encode(f"{self.username}:{secret}".encode()).decode()
            return {"Authorization": f"Basic {token}"}, {}
        if scheme == "header":
            return {name: secret}, {}
        if scheme == "query":
            return {}, {name: secret}
        return {}, {}

    def _path(self, template: str, **values: str) -> str:
        """A request's path: the account url's, then the option's, its placeholders filled (URL-quoted)."""
        path = str(render(template, {**{k: quote(str(v), safe="") for k, v in self._account_values.items()},
                                     **{k: quote(v, safe="") for k, v in values.items()}})) if template else ""
        if path and not path.startswith("/"):
            path = "/" + path
        return (self._prefix + path) or "/"

    def _excerpt(self, response: httpx.Response) -> str:
        return repr(self._scrub(" ".join(response.text.split()))[:ANSWER_EXCERPT])

    def _scrub(self, text: str) -> str:
        """`text` without the account's password or the webhook's secret (an answer may echo a request)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _batch_size(options: HttpSmsOptions) -> int:
    if options.batch_size is not None:
        return options.batch_size
    if options.batch is None and options.per_second:
        # One message a request: a send call carries about a second's messages, so a paced call is no burst.
        return max(1, min(100, math.floor(options.per_second)))
    return 100


def _reports(options: HttpSmsOptions) -> Reports:
    if options.status and options.report:
        return Reports.PUSH_AND_POLL
    if options.status:
        return Reports.POLL
    if options.report:
        return Reports.PUSH
    return Reports.NONE


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return MISSING


def _payload(payload: Any) -> Any:
    """A webhook's body as data: JSON, or a form (the API hands over a body that is not JSON as bytes)."""
    if isinstance(payload, bytes | bytearray):
        payload = bytes(payload).decode("utf-8", errors="replace")
    if isinstance(payload, str):
        text = payload.strip()
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except ValueError:
                pass
        return dict(parse_qsl(text, keep_blank_values=True))
    return payload


def _form_value(value: Any) -> Any:
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "1" if value else "0"
    return value


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds: a number, or an HTTP date; DEFAULT_RETRY_AFTER when it names neither."""
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
            except (TypeError, ValueError):
                pass
    return DEFAULT_RETRY_AFTER


def _report_time(value: Any) -> datetime:
    """A report's time: Unix seconds (or milliseconds), or ISO 8601; now when it is missing or unreadable."""
    if value is None or value is MISSING or value == "":
        return datetime.now(UTC)
    try:
        number = float(value)
    except (TypeError, ValueError):
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            return datetime.now(UTC)
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.now(UTC)
