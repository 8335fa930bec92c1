"""SMS through a generic HTTP aggregator (kind "http") configured purely by its account's options, against two
differently shaped aggregators served on a local port (tests/sms_aggregators.py): a JSON batch API with a
bearer token, and an SMS.ru-like form API with an api_id in the query, one message a request.

The end-to-end tests run the dispatch and poll steps in this process with NOTIFLOW_ROUTES pointing sms at a
provider account block saved in the session's Prefect server; pushed reports go to the session's real API
(`notiflow server`), or to the API app in this process.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from models.settings import get_settings
from models.signing import webhook_secret
from models.status import Channel, MessageStatus
from models.tables import Message
from providers.base import (
    Acceptance,
    LookupUnsupported,
    OutgoingMessage,
    ProviderRejected,
    ProviderUnavailable,
    Reports,
)
from providers.http_sms import HttpSmsProvider
from providers.http_sms_options import HttpSmsAccountError
from providers.registry import ProviderAccount
from tasks.delivery.dispatch import dispatch
from tasks.delivery.poll import poll
from tests.files import phones, write_xlsx
from tests.sms_aggregators import Aggregators, running_aggregators
from tests.test_steps import make_task_from

SMS_RU_STATUS_MAP = {"100": "queued", "101": "sent", "102": "pending", "103": "delivered", "104": "expired",
                     "105": "undelivered", "106": "undelivered", "107": "undelivered", "108": "undelivered"}


def batch_api(**changes: Any) -> dict[str, Any]:
    """Options of the JSON batch aggregator: a list of messages a request, answers in order, reports pushed and polled."""
    return {
        "path": "/a/v1/sms", "body": "json", "auth": "bearer", "batch": "messages",
        "fields": {"to": "{recipient}", "text": "{text}", "from": "{sender}", "callback": "{report_url}", "clientRef": "{ref}"},
        "id_path": "messages.{index}.id", "error_path": "messages.{index}.error.text",
        "status": {"method": "POST", "path": "/a/v1/status", "body": "json", "ids_field": "ids", "ids_as": "list",
                   "status_path": "results.[id={id}].state", "reason_path": "results.[id={id}].error"},
        "report": {"items_path": "results", "id_path": "messageId", "status_path": "status.name",
                   "reason_path": "status.description"},
        "status_map": {"ENROUTE": "pending", "DELIVRD": "delivered", "DELIVERED": "delivered", "UNDELIV": "undelivered",
                       "EXPIRED": "expired", "REJECTED": "error"},
        **changes,
    }


def form_api(**changes: Any) -> dict[str, Any]:
    """Options of the SMS.ru-like aggregator: a form a message, the api_id in the query, statuses polled."""
    return {
        "path": "/b/sms/send", "body": "form", "auth": "query:api_id", "in_flight": 2,
        "fields": {"to": "{recipient_digits}", "msg": "{text}", "from": "{sender}", "json": 1},
        "id_path": "sms.{recipient_digits}.sms_id", "error_path": ["sms.{recipient_digits}.status_text", "status_text"],
        "status": {"path": "/b/sms/status", "ids_field": "sms_id", "fields": {"json": 1},
                   "status_path": "sms.{id}.status_code", "reason_path": "sms.{id}.status_text"},
        "status_map": SMS_RU_STATUS_MAP,
        **changes,
    }


def account(aggregators: Aggregators, options: dict[str, Any], **changes: Any) -> ProviderAccount:
    password = aggregators.token if options.get("auth") == "bearer" else aggregators.api_id
    fields: dict[str, Any] = {"kind": "http", "url": aggregators.url, "password": password, "sender": "notiflow",
                              "options": options}
    return ProviderAccount(**{**fields, **changes})


def adapter(aggregators: Aggregators, options: dict[str, Any], **changes: Any) -> HttpSmsProvider:
    name = f"http-{uuid.uuid4().hex[:8]}"
    return HttpSmsProvider.from_account(name, account(aggregators, options, **changes), get_settings())


def saved(aggregators: Aggregators, options: dict[str, Any], **changes: Any) -> str:
    """A provider account block in the session's Prefect server; returns its (instance) name."""
    name = f"http-{uuid.uuid4().hex[:8]}"
    account(aggregators, options, **changes).save(name, overwrite=True)
    return name


def sms(ref: str, to: str, text: str = "hello", parts: int = 1) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=to, text=text, sender="", channel=Channel.SMS, parts=parts)


@pytest.fixture
def aggregators() -> Iterator[Aggregators]:
    with running_aggregators() as running:
        yield running


def task_of(tmp_path: Path, numbers: list[str]) -> tuple[int, str]:
    """A task of one SMS to each number, taken in, scheduled and leased: ready to dispatch."""
    from tasks.delivery.lease import take_lease
    from tasks.intake.intake import intake
    from tasks.schedule.schedule import schedule

    rows = [[number, f"hello {i}"] for i, number in enumerate(numbers)]
    task_id = make_task_from(write_xlsx(tmp_path / f"http-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text"], rows))
    intake.fn(task_id)
    schedule.fn(task_id)
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    return task_id, owner


def messages_of(engine: Any, task_id: int) -> list[Message]:
    with Session(engine) as session:
        return list(session.scalars(select(Message).where(Message.task_id == task_id).order_by(Message.id)))


def numbers(count: int) -> list[str]:
    return phones(count, start=uuid.uuid4().int % 9_000_000)


# --- sending -----------------------------------------------------------------------------------------------

def test_a_json_batch_goes_in_one_request_and_each_message_gets_its_id_or_its_own_error(
    stack: Any, aggregators: Aggregators, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    first, blocked, third = numbers(3)
    aggregators.blocked.add(blocked.lstrip("+"))
    instance = saved(aggregators, batch_api())
    route_sms(instance)
    task_id, owner = task_of(tmp_path, [first, blocked, third])
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused, result.carrier_fault) == (2, 1, None)
    (request,) = [r for r in aggregators.requests if r["side"] == "a"]
    assert request["headers"]["authorization"] == f"Bearer {aggregators.token}" and not request["query"]
    one, two, three = messages_of(engine, task_id)
    assert one.status == three.status == MessageStatus.SENT
    assert aggregators.sent[one.provider_message_id]["to"] == first  # type: ignore[index]
    assert aggregators.sent[three.provider_message_id]["text"] == "hello 2"  # type: ignore[index]
    assert (two.status, two.provider_message_id) == (MessageStatus.ERROR, None)
    assert two.status_description == f"refused by {instance}: number blocked by the operator"


def test_a_form_api_takes_one_message_a_request_in_flight_at_a_time_with_its_api_key_in_the_query(
    aggregators: Aggregators,
) -> None:
    aggregators.delay["b"] = 0.2
    provider = adapter(aggregators, form_api(in_flight=2))
    batch = [sms(f"ref-{i}", to) for i, to in enumerate(numbers(5))]
    with provider:
        accepted = provider.send(batch)
    assert sorted(a.ref for a in accepted) == [m.ref for m in batch]
    assert all(a.provider_message_id and a.provider_message_id.startswith("000000-") and a.error is None for a in accepted)
    sends = [r for r in aggregators.requests if r["path"] == "/b/sms/send"]
    assert len(sends) == 5 and aggregators.most_in_flight == 2
    for request in sends:
        assert request["query"] == {"api_id": aggregators.api_id}
        assert aggregators.api_id not in request["body"] and "msg=hello" in request["body"] and "json=1" in request["body"]
    assert {m["to"] for m in aggregators.sent.values()} == {m.recipient.lstrip("+") for m in batch}
    # The account's sender goes when a message names none.
    assert {m["from"] for m in aggregators.sent.values()} == {"notiflow"}


def test_the_form_api_refuses_a_blocked_number_with_its_reason_and_a_wrong_api_id_with_its_own(
    aggregators: Aggregators,
) -> None:
    good, blocked = numbers(2)
    aggregators.blocked.add(blocked.lstrip("+"))
    with adapter(aggregators, form_api()) as provider:
        answers = {a.ref: a for a in provider.send([sms("good", good), sms("blocked", blocked)])}
    assert answers["good"].provider_message_id and answers["blocked"].provider_message_id is None
    assert answers["blocked"].error == "На этот номер (или один из номеров) нельзя отправлять сообщения"
    # SMS.ru answers a wrong api_id with HTTP 200 and a top-level status_text: the second error_path reads it.
    wrong = f"WRONG-{uuid.uuid4().hex}"
    with adapter(aggregators, form_api(), password=wrong) as provider:
        (refused,) = provider.send([sms("wrong-key", good)])
    assert (refused.provider_message_id, refused.error) == (None, "Неправильный api_id")


def test_a_refused_login_refuses_the_batch_and_the_secret_it_echoed_is_recorded_nowhere(
    stack: Any, aggregators: Aggregators, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    wrong = f"tok-wrong-{uuid.uuid4().hex}"
    instance = saved(aggregators, batch_api(), password=wrong)
    route_sms(instance)
    task_id, owner = task_of(tmp_path, numbers(2))
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused) == (0, 2)
    assert wrong in aggregators.requests[0]["headers"]["authorization"]  # the aggregator got it, and echoed it back
    for message in messages_of(engine, task_id):
        assert message.status == MessageStatus.ERROR
        assert "refused the account's login (HTTP 401" in message.status_description
        assert wrong not in message.status_description and "***" in message.status_description


def test_a_429_with_retry_after_gives_the_batch_back_unspent_and_holds_the_provider_for_that_long(
    stack: Any, aggregators: Aggregators, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    aggregators.throttle["b"] = 7
    instance = saved(aggregators, form_api())
    route_sms(instance)
    task_id, owner = task_of(tmp_path, numbers(3))
    result = dispatch.fn(task_id, owner, Channel.SMS)
    assert (result.sent, result.refused, result.retry_after) == (0, 0, 7.0)
    assert "HTTP 429" in (result.carrier_fault or "")
    for message in messages_of(engine, task_id):
        assert (message.status, message.handed_at, message.attempts) == (MessageStatus.QUEUED, None, 0)


@pytest.mark.parametrize("options", [batch_api(), form_api()], ids=["batch", "one a request"])
def test_a_429_is_provider_unavailable_with_its_retry_after(aggregators: Aggregators, options: dict[str, Any]) -> None:
    aggregators.throttle["a"] = aggregators.throttle["b"] = 12
    with adapter(aggregators, options) as provider, pytest.raises(ProviderUnavailable) as fault:
        provider.send([sms(f"t-{i}", to) for i, to in enumerate(numbers(3))])
    assert fault.value.retry_after == 12.0 and not fault.value.outcome_unknown and fault.value.answered == []


def test_a_5xx_is_a_carrier_fault_to_try_again_and_a_timeout_leaves_the_outcome_unknown(aggregators: Aggregators) -> None:
    aggregators.fail.add("a")
    with adapter(aggregators, batch_api()) as provider, pytest.raises(ProviderUnavailable) as fault:
        provider.send([sms("fail-1", numbers(1)[0])])
    assert not fault.value.outcome_unknown and "HTTP 500" in str(fault.value)
    aggregators.fail.clear()
    aggregators.delay["a"] = 1.5
    with adapter(aggregators, batch_api(timeout=0.3)) as provider, pytest.raises(ProviderUnavailable) as fault:
        provider.send([sms("slow-1", numbers(1)[0])])
    assert fault.value.outcome_unknown and aggregators.token not in str(fault.value)


def test_an_aggregator_that_cannot_be_reached_is_a_carrier_fault_with_no_secret() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = Aggregators(url=f"http://127.0.0.1:{port}")
    with adapter(closed, form_api()) as provider, pytest.raises(ProviderUnavailable) as fault:
        provider.send([sms("down-1", "+79160000000")])
    assert not fault.value.outcome_unknown and closed.api_id not in str(fault.value)


def test_a_message_of_more_parts_than_the_account_sends_is_refused_before_any_request(aggregators: Aggregators) -> None:
    short, long = numbers(2)
    with adapter(aggregators, form_api(max_parts=2)) as provider:
        answers = {a.ref: a for a in provider.send([sms("short", short), sms("long", long, "я" * 135, parts=3)])}
    assert answers["short"].provider_message_id and "3 SMS parts, more than the 2" in (answers["long"].error or "")
    assert aggregators.sent_to(long.lstrip("+")) == []


# --- statuses ----------------------------------------------------------------------------------------------

def test_statuses_are_polled_and_mapped_through_the_status_map(
    stack: Any, aggregators: Aggregators, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    instance = saved(aggregators, form_api())
    route_sms(instance)
    task_id, owner = task_of(tmp_path, numbers(3))
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 3
    delivered, expired, queued = messages_of(engine, task_id)
    aggregators.codes[delivered.provider_message_id] = 103  # type: ignore[index]
    aggregators.codes[expired.provider_message_id] = 104  # type: ignore[index]
    result = poll.fn(task_id, instance)
    assert result.error is None and result.updated >= 2
    polls = [r for r in aggregators.requests if r["path"] == "/b/sms/status"]
    assert len(polls) == 1 and polls[0]["query"]["api_id"] == aggregators.api_id
    assert set(polls[0]["query"]["sms_id"].split(",")) == {m.provider_message_id for m in (delivered, expired, queued)}
    delivered, expired, queued = messages_of(engine, task_id)
    assert (delivered.status, delivered.status_description) == (MessageStatus.DELIVERED, "Сообщение доставлено")
    assert delivered.delivered_at is not None
    assert (expired.status, expired.status_description) == (MessageStatus.EXPIRED, "Не может быть доставлено: время жизни истекло")
    assert queued.status == MessageStatus.SENT  # "in our queue" ranks below SENT: a status never moves back


def test_a_pushed_report_reaches_the_running_api_and_is_applied_forward_only(
    stack: Any, aggregators: Aggregators, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    instance = saved(aggregators, batch_api())
    route_sms(instance)
    task_id, owner = task_of(tmp_path, numbers(2))
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 2
    pushed, polled = messages_of(engine, task_id)
    callback = aggregators.sent[pushed.provider_message_id]["callback"]  # type: ignore[index]
    assert callback == f"{stack.api_url}/dlr/{instance}?secret={webhook_secret(instance)}"

    def push(status: str, description: str) -> dict[str, Any]:
        report = {"results": [{"messageId": pushed.provider_message_id, "status": {"name": status, "description": description}}]}
        answer = httpx.post(callback, json=report, timeout=30)  # as the aggregator calls it: to the real API
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert push("DELIVERED", "delivered to handset") == {"received": 1, "applied": 1}
    assert push("UNDELIV", "too late") == {"received": 1, "applied": 0}  # final stays final
    assert push("SOMETHING-NEW", "?") == {"received": 0, "applied": 0}  # a word not in status_map changes nothing
    wrong = httpx.post(callback.replace(webhook_secret(instance), "guess"), json={"results": []}, timeout=30)
    assert wrong.status_code == 401
    # The other message's status is polled (push and poll): its state and reason come from the status answer.
    aggregators.states[polled.provider_message_id] = ("UNDELIV", "absent subscriber")  # type: ignore[index]
    assert poll.fn(task_id, instance).error is None
    pushed, polled = messages_of(engine, task_id)
    assert (pushed.status, pushed.status_description) == (MessageStatus.DELIVERED, "delivered to handset")
    assert (polled.status, polled.status_description) == (MessageStatus.UNDELIVERED, "absent subscriber")


def test_a_form_report_pushed_to_the_webhook_is_read_by_the_report_mapping(
    stack: Any, aggregators: Aggregators, route_sms: Any, tmp_path: Path, engine: Any
) -> None:
    from api.app import app

    options = form_api(report={"id_path": "MessageSid", "status_path": "MessageStatus", "reason_path": "ErrorMessage",
                               "at_path": "Timestamp"},
                       status_map={**SMS_RU_STATUS_MAP, "delivered": "delivered", "undelivered": "undelivered"})
    instance = saved(aggregators, options)
    route_sms(instance)
    task_id, owner = task_of(tmp_path, numbers(1))
    assert dispatch.fn(task_id, owner, Channel.SMS).sent == 1
    (message,) = messages_of(engine, task_id)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.post(f"/dlr/{instance}?secret={webhook_secret(instance)}",
                             data={"MessageSid": message.provider_message_id, "MessageStatus": "undelivered",
                                   "ErrorMessage": "phone off", "Timestamp": "1796221225"})
        assert answer.json() == {"received": 1, "applied": 1}
        garbage = client.post(f"/dlr/{instance}?secret={webhook_secret(instance)}", data={"hello": "world"})
        assert garbage.status_code == 422 and "MessageSid" in garbage.json()["error"]["message"]
    (message,) = messages_of(engine, task_id)
    assert (message.status, message.status_description) == (MessageStatus.UNDELIVERED, "phone off")


def test_a_message_is_looked_up_by_reference_only_when_the_options_say_how(aggregators: Aggregators) -> None:
    to = numbers(1)[0]
    with adapter(aggregators, batch_api()) as provider:
        (sent,) = provider.send([sms("lookup-1", to)])
        with pytest.raises(LookupUnsupported):
            provider.lookup(["lookup-1"])
        assert not provider.capabilities.lookup
    with adapter(aggregators, batch_api(lookup={"path": "/a/v1/by-ref/{ref}", "id_path": "id"})) as provider:
        assert provider.capabilities.lookup
        assert provider.lookup(["lookup-1", "never-sent"]) == [
            Acceptance(ref="lookup-1", provider_message_id=sent.provider_message_id, duplicate=True),
            Acceptance(ref="never-sent", provider_message_id=None),
        ]


# --- the account -------------------------------------------------------------------------------------------

def test_capabilities_follow_the_options(aggregators: Aggregators) -> None:
    both = adapter(aggregators, batch_api(in_flight=3)).capabilities
    assert (both.reports, both.in_flight, both.batch_size, both.polled) == (Reports.PUSH_AND_POLL, 3, 100, True)
    push_only = adapter(aggregators, batch_api(status=None)).capabilities
    assert push_only.reports == Reports.PUSH and not push_only.polled
    neither = adapter(aggregators, batch_api(status=None, report=None, fields={"to": "{recipient}", "text": "{text}"}))
    assert neither.capabilities.reports == Reports.NONE
    with pytest.raises(ProviderRejected):
        neither.poll(["x"])
    # One message a request: the dispatcher makes one call at a time, about a second's messages at its rate.
    paced = adapter(aggregators, form_api(per_second=5, in_flight=8, max_parts=4)).capabilities
    assert (paced.reports, paced.in_flight, paced.batch_size, paced.per_second, paced.max_parts) == (Reports.POLL, 1, 5, 5.0, 4)


@pytest.mark.parametrize(("options", "said"), [
    ({}, ["options.fields: Field required", "options.id_path: Field required", 'e.g. "messages.{index}.id"']),
    (form_api(fields={"to": "{phone}"}), ["fields uses {phone}, which is not known here", "{recipient_digits}"]),
    (form_api(method="GET"), ['a GET request has no form body: write "body": "query"']),
    (form_api(auth="token"), ["options.auth: 'token' is not an auth", '"query:PARAM"']),
    (form_api(status_map={}), ['"status_map" is needed', "map the provider's status words to ours"]),
    (form_api(status_map={"103": "arrived"}), ["options.status_map.103", "delivered"]),
    (batch_api(report=None), ["the fields send {report_url}", 'add "report"']),
    (form_api(batch="messages"), ['a batch is a JSON list: write "body": "json"']),
    (form_api(id_path="sms..sms_id"), ["id_path 'sms..sms_id' has an empty step"]),
    (form_api(status={"path": "/b/sms/status", "status_path": "sms.{id}.status_code"}), ["options.status:", "ids_field"]),
    (form_api(in_flight=0), ["options.in_flight", "requests at once, 1 to 64"]),
    (form_api(colour="blue"), ["options.colour: Extra inputs are not permitted", "known options:"]),
])
def test_bad_options_are_refused_naming_the_option_and_what_to_write(
    aggregators: Aggregators, options: dict[str, Any], said: list[str]
) -> None:
    with pytest.raises(HttpSmsAccountError) as refused:
        adapter(aggregators, options)
    message = str(refused.value)
    assert "the http provider account 'http-" in message
    for words in said:
        assert words in message, message


def test_an_account_without_url_or_without_its_password_is_refused_with_what_to_set(aggregators: Aggregators) -> None:
    with pytest.raises(HttpSmsAccountError, match="needs url: the aggregator's address"):
        adapter(aggregators, form_api(), url=None)
    with pytest.raises(HttpSmsAccountError, match="authenticates with 'bearer' but has no password"):
        adapter(aggregators, batch_api(), password=None)


def test_an_account_added_on_the_command_line_reads_its_json_options(stack: Any, aggregators: Aggregators,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from notiflow.cli import app

    name = f"http-cli-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SMSRU_API_ID", aggregators.api_id)
    options = form_api()
    arguments = ["provider", "add", name, "--kind", "http", "--url", aggregators.url, "--password-env", "SMSRU_API_ID"]
    for key, value in options.items():
        arguments += ["--option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    provider = HttpSmsProvider.from_account(name, ProviderAccount.load(name), get_settings())
    assert provider.options.in_flight == 2 and provider.options.status is not None
    with provider:
        (accepted,) = provider.send([sms("cli-1", numbers(1)[0])])
    assert accepted.provider_message_id and accepted.error is None
