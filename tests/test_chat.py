"""The chat adapter: a signed webhook a message to the customer's bot platform (respx stands in for it)."""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from models.settings import get_settings
from models.status import Channel
from providers.account_options import ProviderAccountError
from providers.base import OutgoingMessage, ProviderRejected, ProviderUnavailable
from providers.chat import ChatWebhook
from providers.registry import ProviderAccount, adapter_class

URL = "https://bots.example.com/notiflow/chat"
SECRET = "shared-chat-secret"
CHAT_PARAMS = {"bot id": "bot-support", "chat session name": "Orders", "continue last or start new session": "true",
               "messenger type": "whatsapp", "button": {"text": "Track", "url": "https://shop.example.com/t/1"}}


def message(ref: str, chat: str = "chat-1001", **params: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=chat, text="Your order is ready", sender="Shop", channel=Channel.CHAT,
                           params={**CHAT_PARAMS, **params})


def platform() -> ChatWebhook:
    return ChatWebhook("chat-main", URL, SECRET)


@respx.mock
def test_a_message_is_posted_signed_with_its_chat_session_and_accepted_with_the_platforms_id() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(201, json={"id": "sess-77:msg-1"}))
    [accepted] = platform().send([message("t-1")])
    assert (accepted.provider_message_id, accepted.error) == ("sess-77:msg-1", None)
    request = route.calls.last.request
    body = json.loads(request.content)
    assert body == {"ref": "t-1", "chat_id": "chat-1001", "text": "Your order is ready", "sender": "Shop",
                    "continue_session": True, "bot_id": "bot-support", "session_name": "Orders", "messenger_type": "whatsapp",
                    "button": {"text": "Track", "url": "https://shop.example.com/t/1"}}
    stamp, signature = (part.split("=", 1)[1] for part in request.headers["X-Notiflow-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + request.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)


@respx.mock
def test_a_row_without_its_chat_columns_is_refused_before_any_request_naming_them() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, json={}))
    [refused] = platform().send([message("t-2", **{"bot id": None, "continue last or start new session": ""})])
    assert refused.provider_message_id is None
    assert "'bot id'" in (refused.error or "") and "'continue last or start new session'" in (refused.error or "")
    assert not route.called


@respx.mock
def test_the_platforms_answers_map_to_accepted_refused_throttled_and_faults() -> None:
    respx.post(URL).mock(side_effect=[
        httpx.Response(200, json={}),
        httpx.Response(422, json={"error": "session closed by the operator"}),
    ])
    # Two requests in flight: which gets which answer is the platform's order, not ours.
    answers = platform().send([message("t-3"), message("t-4", chat="chat-2")])
    accepted = [a for a in answers if a.provider_message_id is not None]
    refused = [a for a in answers if a.provider_message_id is None]
    assert [a.provider_message_id for a in accepted] == [accepted[0].ref]  # no id in the answer: our ref stands for it
    assert len(refused) == 1 and refused[0].error == "the bot platform refused it (HTTP 422): session closed by the operator"

    respx.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(ProviderUnavailable) as throttled:
        platform().send([message("t-5")])
    assert throttled.value.retry_after == 7.0

    respx.post(URL).mock(return_value=httpx.Response(503, text="maintenance"))
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        platform().send([message("t-6")])

    respx.post(URL).mock(return_value=httpx.Response(401, json={"error": "bad signature"}))
    with pytest.raises(ProviderRejected, match="refused our signature"):
        platform().send([message("t-7")])


def test_an_account_needs_the_platforms_url_and_the_shared_secret() -> None:
    kind = adapter_class("chat")
    assert kind is ChatWebhook
    with pytest.raises(ProviderAccountError, match="has no url"):
        kind.from_account("chat-main", ProviderAccount(kind="chat", password=SecretStr(SECRET)), get_settings())
    built = kind.from_account("chat-main", ProviderAccount(kind="chat", url=URL, password=SecretStr(SECRET)), get_settings())
    assert isinstance(built, ChatWebhook) and Channel.CHAT in built.capabilities.channels
