"""The sandbox carrier's HTTP contract, exercised against a real uvicorn server."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import ValidationError

from models.status import Channel
from providers.sandbox.carrier import UNDELIVERED_REASONS
from providers.sandbox.config import CONFIG_ENV_VAR, CarrierConfig
from tests.sandbox_fixtures import (
    FAST,
    ReportInbox,
    RunningCarrier,
    carrier,  # noqa: F401  (a fixture: pytest finds it by name)
    report_inbox,  # noqa: F401  (a fixture: pytest finds it by name)
    sandbox_carrier,  # noqa: F401  (a fixture: pytest finds it by name)
    wait_until,
)

FINAL = {"DELIVERED", "UNDELIVERED"}


def sms(ref: str, to: str = "+4915112345678") -> dict[str, Any]:
    return {"ref": ref, "to": to, "sender": "notiflow", "text": f"hello {ref}", "channel": "sms"}


def send(carrier: RunningCarrier, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return carrier.http.post("/messages", json={"messages": messages, **extra})


def statuses(carrier: RunningCarrier, ids: list[str]) -> list[dict[str, Any]]:
    response = carrier.http.post("/messages/status", json={"ids": ids})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["statuses"]
    return result


def final_statuses(carrier: RunningCarrier, ids: list[str]) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]] | None:
        current = statuses(carrier, ids)
        return current if all(item["status"] in FINAL for item in current) else None

    return wait_until(settled, what="every message to reach a final status")


def test_batch_is_accepted_with_one_queued_id_per_message(carrier: RunningCarrier) -> None:
    response = send(carrier, [sms(f"r{i}") for i in range(3)])

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["ref"] for r in results] == ["r0", "r1", "r2"]
    assert all(r["id"].startswith("sbx-") and r["status"] == "QUEUED" and r["duplicate"] is False for r in results)
    assert len({r["id"] for r in results}) == 3
    assert carrier.stats()["accepted"] == 3


def test_batch_over_max_batch_is_refused_with_413_and_nothing_accepted(carrier: RunningCarrier) -> None:
    response = send(carrier, [sms(f"r{i}") for i in range(1001)])

    assert response.status_code == 413
    assert "1001 messages" in response.json()["error"] and "1000" in response.json()["error"]
    assert carrier.stats()["accepted"] == 0


def test_batch_of_exactly_max_batch_is_accepted(carrier: RunningCarrier) -> None:
    response = send(carrier, [sms(f"r{i}") for i in range(1000)])

    assert response.status_code == 200
    assert len(response.json()["results"]) == 1000


def test_empty_batch_is_refused_with_422(carrier: RunningCarrier) -> None:
    assert send(carrier, []).status_code == 422


def test_report_url_that_is_not_http_is_refused_with_422(carrier: RunningCarrier) -> None:
    assert send(carrier, [sms("a")], report_url="mailto:ops@example.org").status_code == 422


def test_duplicate_ref_is_not_accepted_twice(carrier: RunningCarrier) -> None:
    first = send(carrier, [sms("once")]).json()["results"][0]
    again = send(carrier, [sms("once"), sms("once")]).json()["results"]

    assert [r["id"] for r in again] == [first["id"], first["id"]]
    assert [r["duplicate"] for r in again] == [True, True]
    stats = carrier.stats()
    assert (stats["accepted"], stats["duplicates"]) == (1, 2)
    assert len(carrier.http.get("/messages").json()["messages"]) == 1


@pytest.mark.parametrize("to", ["4915112345678", "+1234567", "+1234567890123456", "+49 151 1234", ""])
def test_invalid_recipient_gets_an_error_instead_of_an_id(carrier: RunningCarrier, to: str) -> None:
    result = send(carrier, [sms("bad", to=to)]).json()["results"][0]

    assert result["ref"] == "bad"
    assert "id" not in result
    assert result["error"].startswith("invalid recipient: ")
    assert carrier.stats()["rejected"] == 1


# One valid recipient per channel, as the task file's columns give them.
RECIPIENTS = {
    "sms": "+4915112345678",
    "viber": "+79161234567",
    "whatsapp": "+79161234567",
    "telegram": "+79161234567",
    "vk": "+79161234567",
    "ok": "+79161234567",
    "email": "anna@example.com",
    "push": "fcm:dGVzdC10b2tlbg",
    "chat": "chat-1001",
}


def message(ref: str, channel: str, to: str | None = None) -> dict[str, Any]:
    return {"ref": ref, "to": RECIPIENTS[channel] if to is None else to, "sender": "notiflow", "text": f"hi {ref}", "channel": channel}


def test_every_channel_of_the_spec_is_accepted() -> None:
    assert set(RECIPIENTS) == {channel.value for channel in Channel}


@pytest.mark.parametrize("channel", sorted(RECIPIENTS))
def test_message_on_any_channel_is_accepted_listed_with_its_channel_and_settles(carrier: RunningCarrier, channel: str) -> None:
    [result] = send(carrier, [message(f"{channel}-1", channel)]).json()["results"]

    assert result["id"].startswith("sbx-") and result["status"] == "QUEUED" and result["duplicate"] is False
    [listed] = carrier.http.get("/messages").json()["messages"]
    assert (listed["ref"], listed["channel"], listed["to"]) == (f"{channel}-1", channel, RECIPIENTS[channel])
    assert final_statuses(carrier, [result["id"]])[0]["status"] in FINAL


def test_message_without_a_channel_is_sms(carrier: RunningCarrier) -> None:
    plain = {key: value for key, value in sms("plain").items() if key != "channel"}

    send(carrier, [plain])

    assert [m["channel"] for m in carrier.http.get("/messages").json()["messages"]] == ["sms"]


def test_one_batch_may_mix_channels(carrier: RunningCarrier) -> None:
    results = send(carrier, [message(f"m-{c}", c) for c in RECIPIENTS]).json()["results"]

    assert all("id" in r for r in results)
    listed = {m["ref"]: m["channel"] for m in carrier.http.get("/messages").json()["messages"]}
    assert listed == {f"m-{c}": c for c in RECIPIENTS}


def test_unknown_channel_refuses_the_request_with_422(carrier: RunningCarrier) -> None:
    assert send(carrier, [message("f", "sms") | {"channel": "fax"}]).status_code == 422
    assert carrier.stats()["accepted"] == 0


def test_a_ref_sent_again_on_another_channel_is_still_a_duplicate(carrier: RunningCarrier) -> None:
    first = send(carrier, [message("once", "sms")]).json()["results"][0]

    again = send(carrier, [message("once", "viber")]).json()["results"][0]

    assert (again["id"], again["duplicate"]) == (first["id"], True)
    assert [m["channel"] for m in carrier.http.get("/messages").json()["messages"]] == ["sms"]


@pytest.mark.parametrize(
    ("channel", "to", "says"),
    [
        *[(c, "anna@example.com", "a phone number") for c in ("sms", "viber", "whatsapp", "telegram", "vk", "ok")],
        *[(c, "79161234567", "a phone number") for c in ("viber", "whatsapp", "telegram", "vk", "ok")],
        ("email", "+79161234567", "an e-mail address"),
        ("email", "anna@example", "an e-mail address"),
        ("email", "anna example@example.com", "an e-mail address"),
        ("email", "", "an e-mail address"),
        ("push", "", "a device token"),
        ("push", "fcm:abc def", "a device token"),
        ("chat", "", "a chat id"),
        ("chat", "   ", "a chat id"),
    ],
)
def test_recipient_that_does_not_fit_its_channel_gets_an_error_naming_what_is_needed(
    carrier: RunningCarrier, channel: str, to: str, says: str
) -> None:
    [result] = send(carrier, [message("bad", channel, to)]).json()["results"]

    assert "id" not in result
    assert result["error"].startswith(f"invalid recipient: {channel} needs {says}")
    assert repr(to) in result["error"]
    assert carrier.stats()["rejected"] == 1


@pytest.mark.parametrize(
    ("channel", "to"),
    [("email", "first.last+tag@mail.example.co.uk"), ("push", "apns:0a1b2c3d"), ("chat", "12345"), ("chat", "support chat 7")],
)
def test_recipient_forms_each_channel_allows(carrier: RunningCarrier, channel: str, to: str) -> None:
    [result] = send(carrier, [message("good", channel, to)]).json()["results"]

    assert "error" not in result and result["id"].startswith("sbx-")


def test_status_moves_queued_sent_pending_then_final(carrier: RunningCarrier) -> None:
    carrier.configure(queued_seconds=0.3, sent_seconds=0.3, pending_seconds=0.3)
    message_id = send(carrier, [sms("walk")]).json()["results"][0]["id"]
    seen: list[str] = []

    def settled() -> bool:
        status = statuses(carrier, [message_id])[0]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status in FINAL

    wait_until(settled, interval=0.01)
    assert seen[:3] == ["QUEUED", "SENT", "PENDING"]
    assert len(seen) == 4 and seen[3] in FINAL


def test_updated_at_is_when_the_current_status_began(carrier: RunningCarrier) -> None:
    carrier.configure(queued_seconds=0.1, sent_seconds=0.2, pending_seconds=0.3)
    send(carrier, [sms("clock")])
    accepted = carrier.http.get("/messages").json()["messages"][0]
    final = final_statuses(carrier, [accepted["id"]])[0]

    elapsed = datetime.fromisoformat(final["updated_at"]) - datetime.fromisoformat(accepted["accepted_at"])
    assert final["updated_at"].endswith("Z")
    assert abs(elapsed - timedelta(seconds=0.6)) <= timedelta(milliseconds=2)


def test_status_of_unknown_id_is_null_with_an_error(carrier: RunningCarrier) -> None:
    carrier.configure(queued_seconds=60)  # still in queue when a busy machine gets to ask
    known = send(carrier, [sms("k")]).json()["results"][0]["id"]

    result = statuses(carrier, ["sbx-nope", known])

    assert result[0] == {"id": "sbx-nope", "status": None, "error": "unknown id"}
    assert result[1]["id"] == known and result[1]["ref"] == "k" and result[1]["status"] == "QUEUED"
    assert result[1]["description"] == "in queue"


def test_status_request_over_1000_ids_is_refused(carrier: RunningCarrier) -> None:
    response = carrier.http.post("/messages/status", json={"ids": [f"sbx-{i}" for i in range(1001)]})

    assert response.status_code == 413


def test_delivered_rate_one_delivers_every_message(carrier: RunningCarrier) -> None:
    carrier.configure(delivered_rate=1.0)
    ids = [r["id"] for r in send(carrier, [sms(f"r{i}") for i in range(50)]).json()["results"]]

    final = final_statuses(carrier, ids)

    assert {(s["status"], s["description"]) for s in final} == {("DELIVERED", "delivered")}


def test_delivered_rate_zero_leaves_every_message_undelivered_with_a_reason(carrier: RunningCarrier) -> None:
    carrier.configure(delivered_rate=0.0)
    ids = [r["id"] for r in send(carrier, [sms(f"r{i}") for i in range(50)]).json()["results"]]

    final = final_statuses(carrier, ids)

    assert {s["status"] for s in final} == {"UNDELIVERED"}
    assert {s["description"] for s in final} <= set(UNDELIVERED_REASONS)
    assert len({s["description"] for s in final}) > 1


def test_delivered_rate_sets_the_share_of_delivered_messages(carrier: RunningCarrier) -> None:
    carrier.configure(delivered_rate=0.9)
    ids = [r["id"] for r in send(carrier, [sms(f"r{i}") for i in range(400)]).json()["results"]]

    delivered = sum(s["status"] == "DELIVERED" for s in final_statuses(carrier, ids))

    assert 0.85 * 400 <= delivered <= 0.95 * 400


def outcomes(carrier: RunningCarrier, refs: list[str]) -> dict[str, tuple[str, str]]:
    ids = [r["id"] for r in send(carrier, [sms(ref) for ref in refs]).json()["results"]]
    return {s["ref"]: (s["status"], s["description"]) for s in final_statuses(carrier, ids)}


def test_same_seed_and_ref_always_get_the_same_outcome(carrier: RunningCarrier) -> None:
    refs = [f"r{i}" for i in range(40)]
    carrier.configure(delivered_rate=0.5, seed=7)
    first = outcomes(carrier, refs)
    carrier.reset()
    again = outcomes(carrier, refs)
    carrier.reset()
    carrier.configure(delivered_rate=0.5, seed=8)
    other_seed = outcomes(carrier, refs)

    assert again == first
    assert other_seed != first


def test_injected_500_answers_an_error_and_accepts_nothing(carrier: RunningCarrier) -> None:
    carrier.configure(fault_500_rate=1.0)

    response = send(carrier, [sms("x")])

    assert (response.status_code, response.json()) == (500, {"error": "injected fault"})
    assert carrier.stats()["accepted"] == 0 and carrier.stats()["faults"]["500"] == 1


def test_injected_429_asks_to_retry_after_one_second(carrier: RunningCarrier) -> None:
    carrier.configure(fault_429_rate=1.0)

    response = send(carrier, [sms("x")])

    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert carrier.stats()["accepted"] == 0 and carrier.stats()["faults"]["429"] == 1


def test_injected_timeout_hangs_then_answers_504(carrier: RunningCarrier) -> None:
    carrier.configure(timeout_rate=1.0, timeout_seconds=0.3)

    response = send(carrier, [sms("x")])

    assert response.status_code == 504
    assert response.elapsed >= timedelta(seconds=0.3)
    assert carrier.stats()["accepted"] == 0 and carrier.stats()["faults"]["timeout"] == 1


def test_faults_are_the_same_for_the_same_seed_and_request_number(carrier: RunningCarrier) -> None:
    def pattern() -> list[int]:
        return [send(carrier, [sms(f"p{i}")]).status_code for i in range(20)]

    carrier.configure(fault_500_rate=0.3, fault_429_rate=0.3, seed=3)
    first = pattern()
    carrier.reset()

    assert pattern() == first
    assert {200, 429, 500} <= set(first)
    assert carrier.stats()["send_requests"] == 20


def test_final_reports_are_pushed_to_the_request_report_url(
    carrier: RunningCarrier, report_inbox: ReportInbox
) -> None:
    results = send(carrier, [sms(f"r{i}") for i in range(5)], report_url=report_inbox.url).json()["results"]

    wait_until(lambda: len(report_inbox.reports) >= 5, what="5 pushed reports")

    reports = {r["id"]: r for r in report_inbox.reports}
    assert len(report_inbox.reports) == 5
    assert set(reports) == {r["id"] for r in results}
    assert all(r["status"] in FINAL for r in reports.values())
    assert list(reports.values()) == [reports[s["id"]] for s in statuses(carrier, list(reports))]


def test_reports_go_to_the_configured_report_url_when_the_request_names_none(
    carrier: RunningCarrier, report_inbox: ReportInbox
) -> None:
    carrier.configure(report_url=report_inbox.url)
    send(carrier, [sms("a"), sms("b")])

    wait_until(lambda: len(report_inbox.reports) >= 2, what="2 pushed reports")

    assert {r["ref"] for r in report_inbox.reports} == {"a", "b"}


def test_refused_report_push_is_retried(carrier: RunningCarrier, report_inbox: ReportInbox) -> None:
    report_inbox.refuse_first = 1
    send(carrier, [sms("a")], report_url=report_inbox.url)

    wait_until(lambda: report_inbox.reports, what="the retried report")

    assert report_inbox.attempts == 2
    assert [r["ref"] for r in report_inbox.reports] == ["a"]


def test_messages_without_a_report_url_are_not_pushed(carrier: RunningCarrier, report_inbox: ReportInbox) -> None:
    ids = [send(carrier, [sms("quiet")]).json()["results"][0]["id"]]
    send(carrier, [sms("loud")], report_url=report_inbox.url)

    wait_until(lambda: report_inbox.reports, what="the report of the message with a report_url")
    final_statuses(carrier, ids)

    assert [r["ref"] for r in report_inbox.reports] == ["loud"]


@pytest.mark.parametrize(
    "change",
    [
        {"delivered_rate": 1.5},
        {"queued_seconds": -1},
        {"fault_500_rate": 0.6, "timeout_rate": 0.6},
        {"report_url": "ftp://example.org"},
        {"max_batch": 0},
        {"no_such_knob": 1},
    ],
)
def test_put_config_refuses_invalid_values_and_keeps_the_old_config(
    carrier: RunningCarrier, change: dict[str, Any]
) -> None:
    before = carrier.http.get("/config").json()

    response = carrier.http.put("/config", json={**before, **change})

    assert response.status_code == 422
    assert carrier.http.get("/config").json() == before


def test_put_config_replaces_the_config(carrier: RunningCarrier) -> None:
    new = {**FAST.model_dump(), "delivered_rate": 0.25, "seed": 42}

    response = carrier.http.put("/config", json=new)

    assert response.status_code == 200
    assert carrier.http.get("/config").json() == new


def test_max_batch_from_config_applies_at_once(carrier: RunningCarrier) -> None:
    carrier.configure(max_batch=2)

    assert send(carrier, [sms("a"), sms("b"), sms("c")]).status_code == 413
    assert send(carrier, [sms("a"), sms("b")]).status_code == 200


def test_messages_lists_every_accepted_message(carrier: RunningCarrier) -> None:
    send(carrier, [sms("a"), sms("bad", to="nope")])

    listed = carrier.http.get("/messages").json()["messages"]

    assert [m["ref"] for m in listed] == ["a"]
    assert set(listed[0]) == {"ref", "id", "channel", "to", "sender", "text", "accepted_at", "local_time", "status"}
    assert listed[0]["to"] == "+4915112345678" and listed[0]["text"] == "hello a"
    # A German mobile has one zone: the carrier knows the handset's local time of arrival.
    accepted = datetime.fromisoformat(listed[0]["accepted_at"].replace("Z", "+00:00"))
    local = datetime.fromisoformat(listed[0]["local_time"])
    assert local == accepted and local.utcoffset() == accepted.astimezone(ZoneInfo("Europe/Berlin")).utcoffset()


def test_local_time_is_unknown_for_a_number_with_several_zones(carrier: RunningCarrier) -> None:
    send(carrier, [sms("ru", to="+79161234567")])
    (listed,) = [m for m in carrier.http.get("/messages").json()["messages"] if m["ref"] == "ru"]
    assert listed["local_time"] is None


def test_stats_count_requests_and_statuses(carrier: RunningCarrier) -> None:
    carrier.configure(delivered_rate=1.0)
    ids = [r["id"] for r in send(carrier, [sms("a"), sms("b")]).json()["results"]]
    final_statuses(carrier, ids)

    stats = carrier.stats()

    assert stats["send_requests"] == 1 and stats["accepted"] == 2
    assert stats["by_status"] == {"DELIVERED": 2}
    assert stats["requests"] >= 3
    assert stats["faults"] == {"500": 0, "429": 0, "timeout": 0}


def test_reset_forgets_messages_and_counters(carrier: RunningCarrier) -> None:
    message_id = send(carrier, [sms("a")]).json()["results"][0]["id"]

    carrier.reset()

    assert carrier.http.get("/messages").json()["messages"] == []
    assert statuses(carrier, [message_id])[0]["status"] is None
    stats = carrier.stats()
    assert (stats["accepted"], stats["send_requests"], stats["by_status"]) == (0, 0, {})
    assert send(carrier, [sms("a")]).json()["results"][0]["duplicate"] is False


def test_health(carrier: RunningCarrier) -> None:
    assert carrier.http.get("/health").json() == {"status": "ok"}


def test_config_is_read_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "carrier.json"
    path.write_text(json.dumps({"delivered_rate": 0.5, "seed": 9}))

    config = CarrierConfig.from_file(path)

    assert (config.delivered_rate, config.seed, config.queued_seconds) == (0.5, 9, 0.5)


def test_config_is_read_from_the_environment() -> None:
    assert CarrierConfig.from_env({CONFIG_ENV_VAR: '{"timeout_rate": 0.1}'}).timeout_rate == 0.1
    assert CarrierConfig.from_env({}) == CarrierConfig()
    with pytest.raises(ValueError, match=CONFIG_ENV_VAR):
        CarrierConfig.from_env({CONFIG_ENV_VAR: "{not json"})
    with pytest.raises(ValidationError):
        CarrierConfig.from_env({CONFIG_ENV_VAR: '{"delivered_rate": 2}'})


def test_python_m_providers_sandbox_serves_the_carrier(tmp_path: Path) -> None:
    config = tmp_path / "carrier.json"
    config.write_text(json.dumps({"seed": 5}))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "providers.sandbox", "--port", str(port), "--config", str(config)],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, CONFIG_ENV_VAR: '{"seed": 6}'},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answer = wait_until(lambda: get_or_none(f"http://127.0.0.1:{port}/config"), timeout=10, what="the server")
        assert answer["seed"] == 5  # --config wins over the environment
    finally:
        process.terminate()
        process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_or_none(url: str) -> Any:
    try:
        return httpx.get(url).json()
    except httpx.TransportError:
        return None
