"""Telegram's Bot API adapter against Telegram's documented answers (respx stands in for api.telegram.org)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from models.settings import get_settings
from models.status import Channel
from providers.account_options import ProviderAccountError
from providers.base import OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.registry import ProviderAccount, adapter_class
from providers.telegram import TelegramBot, TelegramOptions

TOKEN = "123456:ABC-secret-token"
API = "https://api.telegram.org"
SEND = f"{API}/bot{TOKEN}/sendMessage"


def message(ref: str, chat: str = "5551234", text: str = "Your order is ready", **params: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=chat, text=text, sender="", channel=Channel.TELEGRAM, params=params)


def sent(chat_id: Any, message_id: int) -> httpx.Response:
    return httpx.Response(200, json={"ok": True, "result": {"message_id": message_id, "chat": {"id": chat_id, "type": "private"},
                                                            "date": 1700000000, "text": "x"}})


def refused(code: int, description: str, **parameters: Any) -> httpx.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return httpx.Response(code, json=body)


@pytest.fixture
def bot() -> Iterator[TelegramBot]:
    with TelegramBot("tg", TOKEN, options=TelegramOptions(in_flight=2)) as instance:
        yield instance


@pytest.fixture
def telegram() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def by_chat(answers: dict[str, httpx.Response]) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        return answers[str(json.loads(request.content)["chat_id"])]
    return answer


def test_send_message_posts_the_documented_json_to_the_bots_path(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    route = telegram.post(SEND).mock(return_value=sent(5551234, 77))
    [acceptance] = bot.send([message("r1", **{"button text": "Track", "button url": "https://example.com/o/1"})])
    assert acceptance.provider_message_id == "5551234:77" and acceptance.error is None
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "chat_id": "5551234", "text": "Your order is ready",
        "reply_markup": {"inline_keyboard": [[{"text": "Track", "url": "https://example.com/o/1"}]]},
    }


def test_chat_id_param_wins_over_the_recipient(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    route = telegram.post(SEND).mock(return_value=sent(-100200, 5))
    [acceptance] = bot.send([message("r1", chat="+79161234567", **{"chat id": "-100200"})])
    assert acceptance.provider_message_id == "-100200:5"
    assert json.loads(route.calls.last.request.content)["chat_id"] == "-100200"


def test_chat_that_never_started_the_bot_is_refused_with_that_reason(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    telegram.post(SEND).mock(side_effect=by_chat({
        "1": refused(403, "Forbidden: bot can't initiate conversation with a user"),
        "2": refused(400, "Bad Request: chat not found"),
        "3": sent(3, 9),
    }))
    answers = {a.ref: a for a in bot.send([message("a", "1"), message("b", "2"), message("c", "3")])}
    assert answers["a"].provider_message_id is None
    assert answers["a"].error == "chat not started: the user has never started the bot (/start)"
    assert answers["b"].provider_message_id is None and answers["b"].error is not None
    assert answers["b"].error.startswith("chat not found")
    assert answers["c"].provider_message_id == "3:9"


def test_blocked_bot_and_supergroup_migration_have_their_reasons(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    telegram.post(SEND).mock(side_effect=by_chat({
        "1": refused(403, "Forbidden: bot was blocked by the user"),
        "-2": refused(400, "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=-1009),
    }))
    answers = {a.ref: a.error for a in bot.send([message("a", "1"), message("b", "-2")])}
    assert answers == {"a": "the user blocked the bot",
                       "b": "the group became a supergroup: send to its new chat id -1009"}


def test_phone_number_is_refused_before_any_request(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    route = telegram.post(SEND).mock(return_value=sent(1, 1))
    [acceptance] = bot.send([message("r1", chat="+79161234567")])
    assert not route.called
    assert acceptance.error is not None and "not a Telegram chat id" in acceptance.error


def test_text_over_4096_characters_is_refused_before_any_request(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    route = telegram.post(SEND).mock(return_value=sent(1, 1))
    [acceptance] = bot.send([message("r1", text="x" * 4097)])
    assert not route.called
    assert acceptance.error is not None and "4,097 characters, more than the 4,096" in acceptance.error


def test_too_many_requests_holds_the_bot_for_telegrams_retry_after(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    telegram.post(SEND).mock(side_effect=by_chat({
        "1": sent(1, 10),
        "2": refused(429, "Too Many Requests: retry after 7", retry_after=7),
    }))
    with pytest.raises(ProviderUnavailable) as raised:
        bot.send([message("a", "1"), message("b", "2")])
    assert raised.value.retry_after == 7.0
    assert not raised.value.outcome_unknown
    assert [(a.ref, a.provider_message_id) for a in raised.value.answered] == [("a", "1:10")]


def test_refused_token_is_a_refused_login_without_the_token(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    telegram.post(SEND).mock(return_value=refused(401, "Unauthorized"))
    with pytest.raises(ProviderRejected) as raised:
        bot.send([message("a")])
    assert "refused the bot token" in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_server_error_is_tried_again_and_a_timeout_is_outcome_unknown(bot: TelegramBot, telegram: respx.MockRouter) -> None:
    telegram.post(SEND).mock(return_value=refused(502, "Bad Gateway"))
    with pytest.raises(ProviderUnavailable) as raised:
        bot.send([message("a")])
    assert not raised.value.outcome_unknown
    telegram.post(SEND).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderUnavailable) as raised:
        bot.send([message("a")])
    assert raised.value.outcome_unknown and TOKEN not in str(raised.value)


def test_account_gives_the_token_url_and_options() -> None:
    account = ProviderAccount(kind="telegram", url="http://127.0.0.1:9/tg", password=SecretStr(TOKEN),
                              options={"per_second": 10, "parse_mode": "HTML"})
    bot = adapter_class("telegram").from_account("tg", account, get_settings())  # type: ignore[attr-defined]
    assert isinstance(bot, TelegramBot)
    assert bot.capabilities.per_second == 10 and bot.capabilities.reports is Reports.NONE
    assert bot.capabilities.channels == frozenset({Channel.TELEGRAM}) and bot.capabilities.in_flight == 1
    with respx.mock() as router:
        route = router.post(f"http://127.0.0.1:9/tg/bot{TOKEN}/sendMessage").mock(return_value=sent(1, 2))
        bot.send([message("a", "1", text="<b>hi</b>")])
    assert json.loads(route.calls.last.request.content)["parse_mode"] == "HTML"
    bot.close()


def test_account_without_token_or_with_an_unknown_option_says_what_to_fix() -> None:
    with pytest.raises(ProviderAccountError, match="has no password: set it to the bot token"):
        TelegramBot.from_account("tg", ProviderAccount(kind="telegram"), get_settings())
    with pytest.raises(ProviderAccountError, match="options.parse_mod: is not an option of telegram accounts"):
        TelegramBot.from_account("tg", ProviderAccount(kind="telegram", password=SecretStr(TOKEN),
                                                       options={"parse_mod": "HTML"}), get_settings())
