"""The phone module's shortcuts (cells that need no cleaning, the number's type as its validity, the
cached time-zone choice) give every number exactly what phonenumbers' public API gives: the same
E.164 number and zone, or a refusal."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import timezone as phone_zones

from models.settings import get_settings
from tasks.intake.phones import _digits, _international, subscriber
from tasks.schedule.windows import zone_for


def full_check(value: Any, region: str, account_zone: str, prefix: str | None = None) -> tuple[str, str]:
    """tasks.intake.phones.subscriber without its shortcuts, with phonenumbers' public API only: the cell
    cleaned, read in the region and then with + before it, is_valid_number, time_zones_for_number
    asked for every number."""
    text = _digits(value)
    if prefix and not text.startswith("+"):
        text = "+" + prefix.strip().lstrip("+") + text.lstrip("0")
    readings = [text]
    if re.fullmatch(r"00[1-9][0-9]{6,14}|[1-9][0-9]{10,14}", text):
        readings.append("+" + text.removeprefix("00"))
    for reading in readings:
        try:
            number = phonenumbers.parse(reading, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            zone = zone_for(phone_zones.time_zones_for_number(number), phonenumbers.region_code_for_number(number), account_zone)
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), zone
    raise ValueError("is not a valid phone number")


def outcome(check: Any, *args: Any) -> tuple[str, Any]:
    """What the check gives: the number and zone, or that it refused (the wording is not compared)."""
    try:
        return "accepted", check(*args)
    except ValueError:
        return "refused", None


def example_numbers() -> list[str]:
    """phonenumbers' example number of every type in every region and for every non-geographic code."""
    numbers = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return sorted(numbers)


def spellings(e164: str) -> list[Any]:
    """The number as cells hold it, and near misses a digit longer, shorter or different."""
    digits = e164[1:]
    changed = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    return [e164, digits, int(digits), float(digits), f"+{digits[:-1]}", f"+{digits}0", f"+{changed}", f"+{digits[:3]} {digits[3:]}"]


EXAMPLES = example_numbers()


@pytest.mark.parametrize(("region", "account_zone"), [("RU", "Europe/Moscow"), ("US", "America/Chicago"), ("DE", "Asia/Tokyo"), ("GB", "Europe/London"), ("BR", "America/Sao_Paulo")])
def test_every_country_and_number_type_gets_the_full_checks_number_and_zone(region: str, account_zone: str) -> None:
    assert len(EXAMPLES) > 1000
    for e164 in EXAMPLES:
        for cell in spellings(e164):
            assert outcome(subscriber, cell, region, account_zone) == outcome(full_check, cell, region, account_zone), cell


def test_national_numbers_with_a_prefix_column_get_the_full_checks_result() -> None:
    for cell, prefix in [("2125551234", "+1"), ("02125551234", "1"), ("9161234567", "7"), ("3012345678", "+49"), ("612345678", "+34")]:
        assert outcome(subscriber, cell, "RU", "Europe/Moscow", prefix) == outcome(full_check, cell, "RU", "Europe/Moscow", prefix)


digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=17)


@given(st.sampled_from(["", "+", "+7", "7", "8", "0", "00", "011", "810", "+1", "+49", "+86", "+380"]), digit_strings, st.sampled_from(["RU", "US", "KZ", "GB", "DE", "IN", "BR"]))
def test_any_digits_get_the_full_checks_result(head: str, tail: str, region: str) -> None:
    cell = head + tail
    assert outcome(subscriber, cell, region, "Europe/Moscow") == outcome(full_check, cell, region, "Europe/Moscow")


@given(st.text(alphabet="0123456789+ -()./exEtTl:#\u00a0\u200e٣", max_size=20))
def test_any_spreadsheet_spelling_gets_the_full_checks_result(cell: str) -> None:
    assert outcome(subscriber, cell, "RU", "Europe/Moscow") == outcome(full_check, cell, "RU", "Europe/Moscow")


@pytest.fixture
def country_zones(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], None]]:
    def use(table: dict[str, str]) -> None:
        monkeypatch.setenv("NOTIFLOW_COUNTRY_ZONES", json.dumps(table))
        get_settings.cache_clear()

    yield use
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_changed_country_zone_table_is_used_at_once(country_zones: Callable[[dict[str, str]], None]) -> None:
    toll_free = "+18002345678"  # no area code: the zone is the country's
    country_zones({"US": "America/Chicago"})
    assert subscriber(toll_free, "RU", "Europe/Moscow") == (toll_free, "America/Chicago")
    country_zones({"US": "America/Denver"})
    assert subscriber(toll_free, "RU", "Europe/Moscow") == (toll_free, "America/Denver")
    country_zones({})
    assert subscriber(toll_free, "RU", "Europe/Moscow") == (toll_free, "Europe/Moscow")


def parsed(text: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, "RU")
    except phonenumbers.NumberParseException:
        return None


def test_an_e164_number_is_read_as_phonenumbers_parse_reads_it() -> None:
    """The shortcut past parse's search for a number in text gives parse's number (every field) or leaves it to parse."""
    read = 0
    for e164 in EXAMPLES:
        for text in (e164, e164[:-1], e164 + "0", e164[:4] + "0" + e164[4:], e164[:4] + "8" + e164[4:]):
            number = _international(text)
            if number is not None:
                read += 1
                assert number == parsed(text), text
    assert read > len(EXAMPLES)  # most examples take the shortcut


@given(st.sampled_from(["+", "+7", "+1", "+39", "+44", "+49", "+86", "+380", "+52", "+54", "+55", "+225"]), digit_strings)
def test_any_plus_and_digits_are_read_as_phonenumbers_parse_reads_them(head: str, tail: str) -> None:
    text = head + tail
    number = _international(text)
    assert number is None or number == parsed(text)
