"""WhatsApp's Cloud API adapter against Meta's documented requests, errors and status webhooks (respx stands in for
graph.facebook.com), and the 24-hour rule."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from models.settings import get_settings
from models.status import Channel, MessageStatus
from providers.account_options import ProviderAccountError
from providers.base import OutgoingMessage, ProviderRejected, ProviderUnavailable
from providers.registry import ProviderAccount, adapter_class
from providers.whatsapp import WhatsAppCloud, WhatsAppOptions

TOKEN = "EAAG-secret-token"
NUMBER_ID = "106540352242922"
SEND = f"https://graph.facebook.com/v21.0/{NUMBER_ID}/messages"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def message(ref: str, text: str = "", phone: str = "+16505551234", **params: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=phone, text=text, sender="", channel=Channel.WHATSAPP, params=params)


def template(ref: str, **params: Any) -> OutgoingMessage:
    return message(ref, **{"template name": "order_ready", "templatenamespace": "c8ae5f90_307a", "language": "en_US", **params})


def accepted(wamid: str) -> httpx.Response:
    return httpx.Response(200, json={"messaging_product": "whatsapp", "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
                                     "messages": [{"id": wamid}]})


def error(status: int, code: int, message: str, details: str = "") -> httpx.Response:
    body: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}
    if details:
        body["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return httpx.Response(status, json={"error": body})


@pytest.fixture
def number() -> Iterator[WhatsAppCloud]:
    with WhatsAppCloud("wa", NUMBER_ID, TOKEN, options=WhatsAppOptions(in_flight=2, retry_after=9), now=lambda: NOW) as instance:
        yield instance


@pytest.fixture
def meta() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def test_template_message_is_the_documented_request(number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    route = meta.post(SEND).mock(return_value=accepted("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"))
    [acceptance] = number.send([template("r1", **{"template data": '{"1": "Anna", "2": "1001"}',
                                                  "media url": "https://example.com/receipt.pdf"})])
    assert acceptance.provider_message_id == "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234", "type": "template",
        "template": {"name": "order_ready", "language": {"code": "en_US"}, "components": [
            {"type": "header", "parameters": [{"type": "document", "document": {"link": "https://example.com/receipt.pdf"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "1001"}]},
        ]},
    }


def test_template_components_given_as_a_list_are_sent_as_they_are(number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    route = meta.post(SEND).mock(return_value=accepted("wamid.1"))
    components = [{"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "1001"}]}]
    number.send([template("r1", **{"template data": components})])
    assert json.loads(route.calls.last.request.content)["template"]["components"] == components


def test_free_text_outside_24_hours_of_the_last_reply_is_refused_before_any_request(
        number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    route = meta.post(SEND).mock(return_value=accepted("wamid.1"))
    answers = {a.ref: a.error for a in number.send([
        message("never", "Hello"),
        message("stale", "Hello", **{"last reply at": (NOW - timedelta(hours=25)).isoformat()}),
    ])}
    assert not route.called
    assert answers["never"] is not None and answers["never"].startswith("outside WhatsApp's 24-hour window: the user's last reply is not known")
    assert answers["stale"] is not None and "last reply was at 2025-02-28 11:00 UTC" in answers["stale"]


def test_free_text_inside_24_hours_of_the_last_reply_is_sent(number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    route = meta.post(SEND).mock(return_value=accepted("wamid.2"))
    [acceptance] = number.send([message("fresh", "Hello", **{"last reply at": str((NOW - timedelta(hours=23)).timestamp())})])
    assert acceptance.provider_message_id == "wamid.2"
    assert json.loads(route.calls.last.request.content)["text"] == {"preview_url": False, "body": "Hello"}


def test_metas_errors_refuse_that_message_with_the_reason(number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        to = json.loads(request.content)["to"]
        return {"1": error(400, 131047, "Re-engagement message", "Message failed to send because more than 24 hours have passed"),
                "2": error(404, 132001, "Template name does not exist in the translation", "template name (x) does not exist in en_US"),
                "3": error(400, 100, "Invalid parameter")}[to]
    meta.post(SEND).mock(side_effect=reply)
    answers = {a.ref: a.error for a in number.send([template("a", phone="+1"), template("b", phone="+2"), template("c", phone="+3")])}
    assert answers["a"] == "outside WhatsApp's 24-hour window since the user's last reply: only an approved template may be sent (131047)"
    assert answers["b"] == "the template does not exist in that language, or is not approved (132001)"
    assert answers["c"] == "WhatsApp refused it: Invalid parameter (code 100)"


def test_throughput_limit_holds_the_number(number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    meta.post(SEND).mock(return_value=error(400, 130429, "Rate limit hit"))
    with pytest.raises(ProviderUnavailable) as raised:
        number.send([template("a")])
    assert raised.value.retry_after == 9
    meta.post(SEND).mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}, json={}))
    with pytest.raises(ProviderUnavailable) as raised:
        number.send([template("a")])
    assert raised.value.retry_after == 30


def test_expired_token_refuses_the_login(number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    meta.post(SEND).mock(return_value=error(401, 190, "Error validating access token: Session has expired"))
    with pytest.raises(ProviderRejected) as raised:
        number.send([template("a")])
    assert "Session has expired" in str(raised.value) and TOKEN not in str(raised.value)


def test_template_without_language_or_with_unreadable_data_is_refused_before_any_request(
        number: WhatsAppCloud, meta: respx.MockRouter) -> None:
    route = meta.post(SEND).mock(return_value=accepted("wamid.1"))
    answers = {a.ref: a.error for a in number.send([template("a", language=""), template("b", **{"template data": "{oops"})])}
    assert not route.called
    assert answers["a"] is not None and "needs its language" in answers["a"]
    assert answers["b"] is not None and "`template data` is not JSON" in answers["b"]


def test_status_webhook_sent_delivered_read_failed(number: WhatsAppCloud) -> None:
    def status(wamid: str, word: str, **extra: Any) -> dict[str, Any]:
        return {"id": wamid, "status": word, "timestamp": "1740830400", "recipient_id": "16505551234", **extra}

    payload = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": NUMBER_ID},
        "statuses": [status("w1", "sent"), status("w2", "delivered"), status("w3", "read"),
                     status("w4", "failed", errors=[{"code": 131026, "title": "Message undeliverable"}]),
                     status("w5", "failed", errors=[{"code": 131053, "title": "Media upload error",
                                                     "error_data": {"details": "Unsupported mime type"}}]),
                     status("w6", "deleted")],
        "messages": [{"from": "16505551234", "id": "wamid.in", "timestamp": "1740830300", "type": "text", "text": {"body": "hi"}}],
    }}]}]}
    reports = {r.provider_message_id: r for r in number.parse_webhook(payload)}
    assert {k: r.status for k, r in reports.items()} == {"w1": MessageStatus.SENT, "w2": MessageStatus.DELIVERED,
                                                          "w3": MessageStatus.READ, "w4": MessageStatus.UNDELIVERED,
                                                          "w5": MessageStatus.UNDELIVERED}
    assert reports["w2"].at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert reports["w4"].description == "not delivered: the number cannot receive this message (not on WhatsApp, or an old WhatsApp) (131026)"
    assert reports["w5"].description == "not delivered: Media upload error: Unsupported mime type (code 131053)"
    with pytest.raises(ValueError):
        number.parse_webhook({"object": "page", "entry": []})


def test_account_needs_the_phone_number_id() -> None:
    with pytest.raises(ProviderAccountError, match="has no username: set it to the business phone number's id"):
        WhatsAppCloud.from_account("wa", ProviderAccount(kind="whatsapp", password=SecretStr(TOKEN)), get_settings())
    account = ProviderAccount(kind="whatsapp", username=NUMBER_ID, password=SecretStr(TOKEN), url="http://127.0.0.1:9/v21.0")
    number = adapter_class("whatsapp").from_account("wa", account, get_settings())  # type: ignore[attr-defined]
    assert isinstance(number, WhatsAppCloud) and number.capabilities.per_second == 80
    number.close()
