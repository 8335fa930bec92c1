"""POST /v1/messages and the message routes over real HTTP against a `notiflow api` server: notifications stored and
scheduled, idempotent retries, per-notification errors in the task file's words, cancellation rules, status
history and fallback chains. The sends through a whole `notiflow server` are in tests/test_api_dispatcher_e2e.py."""
from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tasks.intake.columns import BY_NAME
from tests.api_server import ApiServer

ALL_DAY = [["00:00:00", "24:00:00"]]


def sms(phone: str = "+79161234567", **fields: Any) -> dict[str, Any]:
    return {"phone": phone, "text": "Your code is 1234", "allowed_time_ranges": ALL_DAY, **fields}


def later(**fields: Any) -> dict[str, Any]:
    """A notification that waits (DELAYED) for a send time a day ahead."""
    return sms(send_at="2099-01-01T10:00:00+00:00", **fields)


@pytest.fixture
def client(api_server: ApiServer, auth: dict[str, str]) -> Any:
    with httpx.Client(base_url=api_server.url, headers=auth, timeout=30) as http:
        yield http


def count(client: httpx.Client, **filters: Any) -> int:
    return len(client.get("/v1/messages", params={"limit": 500, **filters}).json()["items"])


def test_a_notification_is_stored_scheduled_and_answered_with_its_plan(client: httpx.Client) -> None:
    answer = client.post("/v1/messages", json={"messages": [sms(external_id="crm-1"), later()]})
    assert answer.status_code == 201, answer.text
    now, waiting = answer.json()["messages"]
    assert (now["item"], now["duplicate"], waiting["item"]) == (0, False, 1)
    (message,) = now["messages"]
    assert message["id"] == now["message_id"] and message["channel"] == "sms" and message["status"] == "QUEUED"
    assert message["scheduled_at"] and message["expires_at"] > message["scheduled_at"]
    assert waiting["messages"][0]["status"] == "DELAYED" and waiting["messages"][0]["scheduled_at"].startswith("2099-01-01T10:00")
    shown = client.get(f"/v1/messages/{now['message_id']}").json()
    assert (shown["recipient"], shown["external_id"], shown["task_id"]) == ("+79161234567", "crm-1", now["task_id"])
    assert [h["status"] for h in shown["history"]] == ["CREATED", "QUEUED"]
    # JSON may hold integers past 64 bits (found by schemathesis): stored, not a server error.
    assert client.post("/v1/messages", json={"messages": [sms(text="n={n}", variables={"n": 10**30})]}).status_code == 201
    task = client.get(f"/v1/tasks/{now['task_id']}").json()
    assert task["name"].startswith("API ") and task["state"] == "in progress"


def test_a_repeated_unique_message_id_returns_the_first_message_and_creates_nothing(client: httpx.Client) -> None:
    unique = f"order-{uuid.uuid4().hex}"
    first = client.post("/v1/messages", json={"messages": [sms(unique_message_id=unique)]})
    again = client.post("/v1/messages", json={"messages": [sms(unique_message_id=unique, text="another text"), sms(unique_message_id=unique)]})
    assert first.status_code == again.status_code == 201, again.text
    original = first.json()["messages"][0]
    assert original["duplicate"] is False
    for repeat in again.json()["messages"]:
        assert (repeat["message_id"], repeat["duplicate"], repeat["messages"]) == (original["message_id"], True, original["messages"])
    assert count(client, unique_message_id=unique) == 1
    # Within one request too: the second of two equal ids is the first's message.
    fresh = f"order-{uuid.uuid4().hex}"
    pair = client.post("/v1/messages", json={"messages": [sms(unique_message_id=fresh), sms(unique_message_id=fresh)]}).json()["messages"]
    assert pair[0]["message_id"] == pair[1]["message_id"] and [p["duplicate"] for p in pair] == [False, True]
    assert count(client, unique_message_id=fresh) == 1


def test_an_idempotency_key_replays_the_first_answer_for_the_same_token_only(client: httpx.Client, api_server: ApiServer,
                                                                             auth: dict[str, str]) -> None:
    key = uuid.uuid4().hex
    body = {"messages": [sms(external_id=key), sms(external_id=key)]}
    first = client.post("/v1/messages", json=body, headers={"Idempotency-Key": key})
    again = client.post("/v1/messages", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert count(client, external_id=key) == 2
    changed = client.post("/v1/messages", json={"messages": [sms(external_id=key)]}, headers={"Idempotency-Key": key})
    assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"
    other = httpx.post(f"{api_server.url}/v1/tokens", json={"name": f"other-{key[:8]}"}, headers=auth).json()["token"]
    theirs = httpx.post(f"{api_server.url}/v1/messages", json=body, headers={"Idempotency-Key": key, "Authorization": f"Bearer {other}"})
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert count(client, external_id=key) == 4, "a key is per token: another token's request is a new one"


def _reason(column: str, value: Any) -> str:
    with pytest.raises(ValueError) as refused:
        BY_NAME[column].parse(value)
    return str(refused.value)


def test_invalid_notifications_are_refused_naming_item_field_and_reason_and_nothing_is_sent(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    body = {"messages": [
        sms(external_id=marker),
        sms(phone="not a phone", external_id=marker),
        sms(validity_period=3000, priority="urgent", external_id=marker),
        {"email": "anna@example.com", "channel": "email", "text": "hi {name}", "external_id": marker},
        sms(params={"no such column": 1}),
    ]}
    answer = client.post("/v1/messages", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_notifications"
    details = {d["field"]: d for d in error["details"]}
    # A params problem is found before the rows are checked: that alone is answered.
    assert set(details) == {"body.messages[4].params.no such column"}
    del body["messages"][4]
    error = client.post("/v1/messages", json=body).json()["error"]
    details = {d["field"]: d for d in error["details"]}
    assert set(details) == {"body.messages[1].phone", "body.messages[2].validity_period", "body.messages[2].priority",
                            "body.messages[3].variables"}
    # The task file's reasons, word for word.
    assert details["body.messages[2].validity_period"]["message"] == _reason("validity period", 3000)
    assert details["body.messages[2].priority"]["message"] == _reason("priority", "urgent")
    assert details["body.messages[1].phone"]["type"] == "invalid_phone"
    assert "name" in details["body.messages[3].variables"]["message"]
    assert error["message"].startswith("3 notifications are not valid and nothing was sent")
    assert count(client, external_id=marker) == 0
    too_many = client.post("/v1/messages", json={"messages": [sms()] * 1001})
    assert too_many.status_code == 422 and too_many.json()["error"]["details"][0]["field"] == "body.messages"


def test_only_created_delayed_or_paused_messages_can_be_cancelled(client: httpx.Client) -> None:
    waiting, queued = client.post("/v1/messages", json={"messages": [later(), sms()]}).json()["messages"]
    cancelled = client.post(f"/v1/messages/{waiting['message_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {
        "message_id": waiting["message_id"], "status": "CANCELED", "cancelled": [waiting["message_id"]]}
    history = client.get(f"/v1/messages/{waiting['message_id']}").json()["history"]
    assert [h["status"] for h in history] == ["CREATED", "DELAYED", "CANCELED"] and history[-1]["source"] == "cancel"
    for refused in (waiting, queued):  # cancelled already; queued for sending
        again = client.post(f"/v1/messages/{refused['message_id']}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "message_not_cancelable"
    # The session's dispatcher may have sent it meanwhile: the refusal names whatever status it has by then.
    refusal = client.post(f"/v1/messages/{queued['message_id']}/cancel").json()["error"]["message"]
    named = re.match(rf"message {queued['message_id']} is ([A-Z]+): only a CREATED, DELAYED, PAUSED message", refusal)
    assert named and named.group(1) in ("QUEUED", "SENT", "PENDING", "DELIVERED", "READ", "UNDELIVERED"), refusal
    assert client.post("/v1/messages/999999999/cancel").status_code == 404


def test_a_message_shows_its_fallback_chain_and_cancelling_it_cancels_the_channels_waiting_for_it(client: httpx.Client) -> None:
    (notification,) = client.post("/v1/messages", json={"messages": [
        later(email="anna@example.com", channels=["sms", "email"]),
    ]}).json()["messages"]
    first, fallback = notification["messages"]
    assert (first["channel"], first["status"], fallback["channel"], fallback["status"], fallback["waits_for"]) == \
        ("sms", "DELAYED", "email", "CREATED", "sms")
    shown = client.get(f"/v1/messages/{fallback['id']}").json()
    assert [(m["id"], m["step"]) for m in shown["chain"]] == [(first["id"], 0), (fallback["id"], 1)]
    assert client.post(f"/v1/messages/{first['id']}/cancel").json()["cancelled"] == [first["id"], fallback["id"]]
    assert client.get(f"/v1/messages/{fallback['id']}").json()["status"] == "CANCELED"


def test_messages_are_listed_newest_first_filtered_a_page_at_a_time(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    sent = client.post("/v1/messages", json={"messages": [
        sms(phone=f"+7916555{n:04d}", external_id=marker) for n in range(5)
    ] + [later(external_id=marker)]}).json()["messages"]
    ids = sorted((s["message_id"] for s in sent), reverse=True)
    first = client.get("/v1/messages", params={"external_id": marker, "limit": 4}).json()
    rest = client.get("/v1/messages", params={"external_id": marker, "limit": 4, "cursor": first["next_cursor"]}).json()
    assert [m["id"] for m in first["items"] + rest["items"]] == ids and rest["next_cursor"] is None
    assert len(client.get("/v1/messages", params={"external_id": marker, "status": "DELAYED"}).json()["items"]) == 1
    assert {m["recipient"] for m in client.get("/v1/messages", params={"external_id": marker, "phone": "6555 0003"}).json()["items"]} \
        == {"+79165550003"}
    task = client.get("/v1/messages", params={"task_id": sent[0]["task_id"], "channel": "sms", "limit": 1}).json()
    assert task["items"][0]["task_id"] == sent[0]["task_id"]
    assert client.get("/v1/messages", params={"phone": "abc"}).status_code == 422
    assert client.get("/v1/messages/9223372036854775807").status_code == 404
