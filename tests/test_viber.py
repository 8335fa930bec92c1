"""Viber's REST Bot API adapter against Viber's documented answers and callbacks (respx stands in for chatapi.viber.com)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from models.settings import get_settings
from models.status import Channel, MessageStatus
from providers.base import OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.registry import ProviderAccount, adapter_class
from providers.viber import ViberBot, ViberOptions

TOKEN = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
SEND = "https://chatapi.viber.com/pa/send_message"
USER = "01234567890A="


def message(ref: str, receiver: str = USER, text: str = "Your order is ready", sender: str = "Shop", **params: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=receiver, text=text, sender=sender, channel=Channel.VIBER, params=params)


def answer(status: int, message_token: int | None = None, status_message: str = "ok") -> httpx.Response:
    body: dict[str, Any] = {"status": status, "status_message": status_message}
    if message_token is not None:
        body.update(message_token=message_token, chat_hostname="SN-CHAT-01_")
    return httpx.Response(200, json=body)


@pytest.fixture
def bot() -> Iterator[ViberBot]:
    with ViberBot("vb", TOKEN, options=ViberOptions(in_flight=2, retry_after=3)) as instance:
        yield instance


@pytest.fixture
def viber() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def by_receiver(answers: dict[str, httpx.Response]) -> Any:
    def reply(request: httpx.Request) -> httpx.Response:
        return answers[json.loads(request.content)["receiver"]]
    return reply


def test_text_message_with_a_button_is_the_documented_send_message(bot: ViberBot, viber: respx.MockRouter) -> None:
    route = viber.post(SEND).mock(return_value=answer(0, 5741311803571721087))
    [acceptance] = bot.send([message("r1", **{"button text": "Open", "button url": "https://example.com/o/1"})])
    assert acceptance.provider_message_id == "5741311803571721087"
    request = route.calls.last.request
    assert request.headers["X-Viber-Auth-Token"] == TOKEN
    assert json.loads(request.content) == {
        "receiver": USER, "min_api_version": 1, "sender": {"name": "Shop"}, "tracking_data": "r1",
        "type": "text", "text": "Your order is ready",
        "keyboard": {"Type": "keyboard", "DefaultHeight": False,
                     "Buttons": [{"ActionType": "open-url", "ActionBody": "https://example.com/o/1", "Text": "Open"}]},
    }


def test_image_makes_a_picture_message_with_the_text_as_caption(bot: ViberBot, viber: respx.MockRouter) -> None:
    route = viber.post(SEND).mock(return_value=answer(0, 1))
    bot.send([message("r1", **{"image url": "https://example.com/a.png"})])
    body = json.loads(route.calls.last.request.content)
    assert (body["type"], body["text"], body["media"]) == ("picture", "Your order is ready", "https://example.com/a.png")


def test_receiver_errors_refuse_that_message_with_their_reason(bot: ViberBot, viber: respx.MockRouter) -> None:
    viber.post(SEND).mock(side_effect=by_receiver({
        "u1=": answer(6, status_message="receiverNotSubscribed"),
        "u2=": answer(5, status_message="receiverNotRegistered"),
        "u3=": answer(0, 42),
    }))
    answers = {a.ref: a for a in bot.send([message("a", "u1="), message("b", "u2="), message("c", "u3=")])}
    assert answers["a"].error == "the receiver has not subscribed to the bot (receiverNotSubscribed)"
    assert answers["b"].error == "the receiver is not a Viber user (receiverNotRegistered)"
    assert answers["c"].provider_message_id == "42"


def test_too_many_requests_holds_the_bot(bot: ViberBot, viber: respx.MockRouter) -> None:
    viber.post(SEND).mock(return_value=answer(12, status_message="tooManyRequests"))
    with pytest.raises(ProviderUnavailable) as raised:
        bot.send([message("a")])
    assert raised.value.retry_after == 3


def test_invalid_token_refuses_the_login(bot: ViberBot, viber: respx.MockRouter) -> None:
    viber.post(SEND).mock(return_value=answer(2, status_message="invalidAuthToken"))
    with pytest.raises(ProviderRejected, match="invalidAuthToken"):
        bot.send([message("a")])


def test_phone_receiver_and_missing_sender_are_refused_before_any_request(viber: respx.MockRouter) -> None:
    route = viber.post(SEND).mock(return_value=answer(0, 1))
    with ViberBot("vb", TOKEN) as bot:
        answers = {a.ref: a.error for a in bot.send([message("a", "+79161234567"), message("b", sender="")])}
    assert not route.called
    assert answers["a"] is not None and "not a Viber user id" in answers["a"]
    assert answers["b"] is not None and answers["b"].startswith("no sender name")


def test_delivered_seen_and_failed_callbacks_become_delivered_read_undelivered(bot: ViberBot) -> None:
    def callback(event: str, **extra: Any) -> dict[str, Any]:
        return {"event": event, "timestamp": 1457764197627, "chat_hostname": "SN-376_", "message_token": 4912661846655238145,
                "user_id": USER, **extra}

    [delivered] = bot.parse_webhook(callback("delivered"))
    [seen] = bot.parse_webhook(callback("seen"))
    [failed] = bot.parse_webhook(callback("failed", desc="failure description"))
    assert delivered.provider_message_id == "4912661846655238145" and delivered.status is MessageStatus.DELIVERED
    assert delivered.at == datetime(2016, 3, 12, 6, 29, 57, 627000, tzinfo=UTC)
    assert seen.status is MessageStatus.READ
    assert failed.status is MessageStatus.UNDELIVERED and failed.description == "not delivered: failure description"
    assert bot.parse_webhook({"event": "webhook", "timestamp": 1, "message_token": 2}) == []
    with pytest.raises(ValueError):
        bot.parse_webhook({"message_token": 1})


def test_account_builds_a_push_reported_viber_instance() -> None:
    account = ProviderAccount(kind="viber", password=SecretStr(TOKEN), sender="Shop", options={"per_second": 20})
    bot = adapter_class("viber").from_account("vb", account, get_settings())  # type: ignore[attr-defined]
    assert isinstance(bot, ViberBot) and bot.sender == "Shop"
    assert bot.capabilities.reports is Reports.PUSH and bot.capabilities.per_second == 20
    bot.close()
