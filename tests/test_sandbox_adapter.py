"""SandboxCarrier against a real sandbox carrier: acceptance, polling, webhooks and every injected fault."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from models.status import Channel, MessageStatus
from providers.base import (
    OutgoingMessage,
    ProviderRejected,
    ProviderUnavailable,
    StatusReport,
)
from providers.sandbox.adapter import RECEIPT_CODES, SandboxCarrier
from providers.sandbox.carrier import UNDELIVERED_REASONS
from tests.sandbox_fixtures import (
    ReportInbox,
    RunningCarrier,
    carrier,  # noqa: F401  (a fixture: pytest finds it by name)
    report_inbox,  # noqa: F401  (a fixture: pytest finds it by name)
    sandbox_carrier,  # noqa: F401  (a fixture: pytest finds it by name)
    wait_until,
)

FINAL = {MessageStatus.DELIVERED, MessageStatus.UNDELIVERED}


@pytest.fixture
def sandbox(carrier: RunningCarrier) -> Iterator[SandboxCarrier]:
    provider = SandboxCarrier(carrier.url, timeout=5)
    yield provider
    provider.close()


def sms(ref: str, recipient: str = "+4915112345678") -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=recipient, text=f"hello {ref}", sender="notiflow", channel=Channel.SMS)


def settled(provider: SandboxCarrier, ids: list[str]) -> list[StatusReport]:
    def all_final() -> list[StatusReport] | None:
        reports = provider.poll(ids)
        return reports if len(reports) == len(ids) and all(r.status in FINAL for r in reports) else None

    return wait_until(all_final, what="every message to reach a final status")


def test_sandbox_declares_its_limits_as_data(sandbox: SandboxCarrier) -> None:
    limits = SandboxCarrier.capabilities
    assert (sandbox.name, SandboxCarrier.kind, limits.batch_size, limits.channels) == ("sandbox", "sandbox", 1000, frozenset(Channel))
    assert limits.polled and limits.lookup and limits.in_flight > 1
    assert limits.poll_schedule[0] < 60 and limits.poll_schedule[-1] == 24 * 3600
    assert list(limits.poll_schedule) == sorted(limits.poll_schedule)


def test_send_returns_one_acceptance_with_an_id_per_message(sandbox: SandboxCarrier) -> None:
    acceptances = sandbox.send([sms("a"), sms("b")])

    assert [a.ref for a in acceptances] == ["a", "b"]
    assert all(a.provider_message_id and a.error is None and not a.duplicate for a in acceptances)
    assert sandbox.requests == 1


def test_send_of_a_known_ref_returns_the_first_id_as_duplicate(sandbox: SandboxCarrier, carrier: RunningCarrier) -> None:
    [first] = sandbox.send([sms("a")])

    [again] = sandbox.send([sms("a")])

    assert (again.provider_message_id, again.duplicate) == (first.provider_message_id, True)
    assert carrier.stats()["accepted"] == 1


def test_send_reports_an_invalid_recipient_for_that_message_only(sandbox: SandboxCarrier) -> None:
    good, bad = sandbox.send([sms("good"), sms("bad", recipient="0151 1234")])

    assert good.provider_message_id is not None
    assert bad.provider_message_id is None and bad.error is not None and "invalid recipient" in bad.error


# A recipient each channel takes, and one it refuses.
RECIPIENTS = {
    Channel.SMS: ("+4915112345678", "anna@example.com"),
    Channel.EMAIL: ("anna@example.com", "+4915112345678"),
    Channel.PUSH: ("fcm:dGVzdC10b2tlbg", "fcm: with spaces"),
    Channel.VIBER: ("+79161234567", "viber-user"),
    Channel.WHATSAPP: ("+79161234567", "anna@example.com"),
    Channel.TELEGRAM: ("+79161234567", "@anna"),
    Channel.VK: ("+79161234567", "id123"),
    Channel.OK: ("+79161234567", ""),
    Channel.CHAT: ("chat-1001", ""),
}


def on(channel: Channel, ref: str, recipient: str) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=recipient, text=f"hello {ref}", sender="notiflow", channel=channel)


def test_there_is_a_recipient_example_for_every_channel() -> None:
    assert set(RECIPIENTS) == set(Channel)


@pytest.mark.parametrize("channel", list(Channel))
def test_adapter_sends_its_channel_through_the_carrier_and_polls_it_to_a_final_status(
    carrier: RunningCarrier, channel: Channel
) -> None:
    good, bad = RECIPIENTS[channel]
    with SandboxCarrier(carrier.url, timeout=5) as provider:
        accepted, refused = provider.send([on(channel, "good", good), on(channel, "bad", bad)])
        assert accepted.provider_message_id is not None and accepted.error is None
        assert refused.provider_message_id is None and refused.error is not None
        assert refused.error.startswith(f"invalid recipient: {channel.value} needs")

        [report] = settled(provider, [accepted.provider_message_id])

    assert report.ref == "good"
    [listed] = carrier.http.get("/messages").json()["messages"]
    assert (listed["ref"], listed["channel"], listed["to"]) == ("good", channel.value, good)


def test_one_instance_sends_every_channel_in_one_request(carrier: RunningCarrier, sandbox: SandboxCarrier) -> None:
    answers = {a.ref: a for a in sandbox.send([on(Channel.VIBER, "v", "+79161234567"), on(Channel.EMAIL, "e", "anna@example.com")])}

    assert all(a.provider_message_id is not None for a in answers.values()) and sandbox.requests == 1
    assert {(m["ref"], m["channel"]) for m in carrier.http.get("/messages").json()["messages"]} == {("v", "viber"), ("e", "email")}


def test_a_second_instance_has_its_own_name(carrier: RunningCarrier) -> None:
    with SandboxCarrier(carrier.url, name="sandbox-eu") as other:
        assert other.name == "sandbox-eu"


def test_send_over_the_batch_limit_is_rejected(sandbox: SandboxCarrier) -> None:
    with pytest.raises(ProviderRejected, match="413"):
        sandbox.send([sms(f"r{i}") for i in range(1001)])


def test_poll_maps_carrier_statuses_and_skips_unknown_ids(carrier: RunningCarrier, sandbox: SandboxCarrier) -> None:
    # Queued long enough that a busy machine's poll still finds it in queue (FAST moves on after 0.05 s).
    carrier.configure(queued_seconds=60)
    [acceptance] = sandbox.send([sms("a")])
    assert acceptance.provider_message_id is not None

    [report] = sandbox.poll([acceptance.provider_message_id, "sbx-unknown"])

    assert report.provider_message_id == acceptance.provider_message_id and report.ref == "a"
    assert report.status == MessageStatus.QUEUED and report.description == "in queue"
    assert report.at.tzinfo is not None


def test_poll_asks_in_chunks_of_1000_ids(sandbox: SandboxCarrier) -> None:
    [acceptance] = sandbox.send([sms("a")])
    ids = [f"sbx-unknown-{i}" for i in range(1500)] + [str(acceptance.provider_message_id)]

    reports = sandbox.poll(ids)

    assert [r.ref for r in reports] == ["a"]
    assert sandbox.requests == 3  # one send, two status requests


def test_poll_reaches_delivered(sandbox: SandboxCarrier, carrier: RunningCarrier) -> None:
    carrier.configure(delivered_rate=1.0)
    ids = [str(a.provider_message_id) for a in sandbox.send([sms(f"r{i}") for i in range(10)])]

    reports = settled(sandbox, ids)

    assert {(r.status, r.description) for r in reports} == {(MessageStatus.DELIVERED, "delivered")}


def test_poll_reaches_undelivered_with_the_reason(sandbox: SandboxCarrier, carrier: RunningCarrier) -> None:
    carrier.configure(delivered_rate=0.0)
    ids = [str(a.provider_message_id) for a in sandbox.send([sms(f"r{i}") for i in range(10)])]

    reports = settled(sandbox, ids)

    assert {r.status for r in reports} == {MessageStatus.UNDELIVERED}
    assert {r.description for r in reports} <= set(UNDELIVERED_REASONS)


def test_injected_500_is_provider_unavailable_with_a_known_outcome(
    sandbox: SandboxCarrier, carrier: RunningCarrier
) -> None:
    carrier.configure(fault_500_rate=1.0)

    with pytest.raises(ProviderUnavailable, match="500") as raised:
        sandbox.send([sms("a")])

    assert raised.value.outcome_unknown is False


def test_injected_429_is_provider_unavailable_retrying_after_one_second(
    sandbox: SandboxCarrier, carrier: RunningCarrier
) -> None:
    carrier.configure(fault_429_rate=1.0)

    with pytest.raises(ProviderUnavailable, match="429") as raised:
        sandbox.send([sms("a")])

    assert raised.value.retry_after == 1.0 and raised.value.outcome_unknown is False


def test_injected_timeout_is_provider_unavailable_with_an_unknown_outcome(carrier: RunningCarrier) -> None:
    carrier.configure(timeout_rate=1.0, timeout_seconds=0.5)

    with SandboxCarrier(carrier.url, timeout=0.1) as impatient, pytest.raises(ProviderUnavailable) as raised:
        impatient.send([sms("a")])

    assert raised.value.outcome_unknown is True


def test_resend_after_a_timeout_is_accepted_because_the_timed_out_request_was_not(
    sandbox: SandboxCarrier, carrier: RunningCarrier
) -> None:
    carrier.configure(timeout_rate=1.0, timeout_seconds=0.5)
    with SandboxCarrier(carrier.url, timeout=0.1) as impatient, pytest.raises(ProviderUnavailable):
        impatient.send([sms("a")])
    carrier.configure()

    [acceptance] = sandbox.send([sms("a")])

    assert acceptance.provider_message_id is not None and acceptance.duplicate is False


def test_injected_504_after_the_hang_is_provider_unavailable(sandbox: SandboxCarrier, carrier: RunningCarrier) -> None:
    carrier.configure(timeout_rate=1.0, timeout_seconds=0.1)

    with pytest.raises(ProviderUnavailable, match="504"):
        sandbox.send([sms("a")])


def test_pushed_reports_parse_into_the_same_statuses_as_a_poll(
    carrier: RunningCarrier, report_inbox: ReportInbox
) -> None:
    with SandboxCarrier(carrier.url, report_url=report_inbox.url) as provider:
        ids = [str(a.provider_message_id) for a in provider.send([sms(f"r{i}") for i in range(5)])]
        wait_until(lambda: len(report_inbox.reports) >= 5, what="5 pushed reports")

        pushed = [r for payload in report_inbox.payloads for r in provider.parse_webhook(payload)]
        polled = provider.poll(ids)

    assert sorted(pushed, key=lambda r: r.provider_message_id) == sorted(polled, key=lambda r: r.provider_message_id)
    assert {r.status for r in pushed} <= FINAL


@pytest.mark.parametrize(
    "payload",
    [{"hello": "world"}, [], None, {"reports": [1]}, {"reports": [{"id": "sbx-1", "status": "SENT"}]}],
)
def test_webhook_payload_that_is_not_a_report_is_refused(sandbox: SandboxCarrier, payload: object) -> None:
    with pytest.raises(ValueError, match="a delivery report is"):
        sandbox.parse_webhook(payload)


def test_webhook_report_with_an_unknown_status_is_skipped(sandbox: SandboxCarrier) -> None:
    report = {"id": "sbx-1", "ref": "a", "description": "?", "updated_at": "2026-01-01T00:00:00.000Z"}

    reports = sandbox.parse_webhook({"reports": [{**report, "status": "EXPLODED"}, {**report, "status": "SENT"}]})

    assert [r.status for r in reports] == [MessageStatus.SENT]


def test_every_carrier_status_has_a_receipt_code() -> None:
    assert set(RECEIPT_CODES) == {"QUEUED", "SENT", "PENDING", "DELIVERED", "UNDELIVERED"}
