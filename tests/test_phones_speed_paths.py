"""The phone module's shortcuts (cells that need no cleaning, the cached time-zone choice) give every
number exactly what the full check gives: the same E.164 number and zone, or the same refusal."""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import timezone as phone_zones

from models.settings import get_settings
from tasks.phones import _is_valid_for_region, _parse, _valid_region, subscriber
from tasks.windows import zone_for


def full_check(value: Any, region: str, account_zone: str, prefix: str | None = None) -> tuple[str, str]:
    """tasks.phones.subscriber as it was before its shortcuts: every cell cleaned, is_valid_number and
    time_zones_for_number asked for every number."""
    if isinstance(value, bool):
        raise ValueError("is a true/false cell, not a phone number")  # noqa: TRY004 (a bad cell, refused like any other)
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a phone number")
        value = str(int(value))
    text = "".join(c for c in str(value) if unicodedata.category(c) not in ("Zs", "Cf", "Cc"))
    if text.lower().startswith("tel:"):
        text = text[4:]
    text = re.sub(r"(?:ext\.?|x|доб\.?|#)\d+$", "", text, flags=re.IGNORECASE)
    scientific = re.fullmatch(r"(\d)(?:[.,](\d+))?[eE]\+?(\d+)", text)
    if scientific:
        whole, decimals, exponent = scientific.group(1), scientific.group(2) or "", int(scientific.group(3))
        if len(decimals) > exponent:
            raise ValueError(f"{text} is not a whole number")
        if len(decimals) < exponent:
            raise ValueError(
                "was rounded by Excel (scientific notation lost its last digits); format the column as Text and type the full number"
            )
        text = whole + decimals
    elif re.fullmatch(r"\d+\.0+", text):
        text = text.split(".", 1)[0]
    else:
        text = re.sub(r"[()\-./]", "", text)
    if re.search(r"[^\d+]", text):
        raise ValueError("contains letters or symbols; write the number in digits")
    if prefix and not text.startswith("+"):
        text = "+" + prefix.strip().lstrip("+") + text.lstrip("0")
    if region == "RU" and len(text) == 11 and text.startswith("8"):
        text = "+7" + text[1:]
    elif re.fullmatch(r"\d{11,15}", text):
        text = "+" + text
    number = phonenumbers.parse(text, region)
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number")
    zone = zone_for(phone_zones.time_zones_for_number(number), phonenumbers.region_code_for_number(number), account_zone)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), zone


def outcome(check: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "accepted", check(*args)
    except (ValueError, phonenumbers.NumberParseException) as exc:
        return type(exc).__name__, str(exc)


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


@pytest.mark.parametrize(("region", "account_zone"), [("RU", "Europe/Moscow"), ("US", "America/Chicago"), ("DE", "Asia/Tokyo")])
def test_every_country_and_number_type_gets_the_full_checks_number_and_zone(region: str, account_zone: str) -> None:
    assert len(EXAMPLES) > 1000
    for e164 in EXAMPLES:
        for cell in spellings(e164):
            assert outcome(subscriber, cell, region, account_zone) == outcome(full_check, cell, region, account_zone), cell


def test_national_numbers_with_a_prefix_column_get_the_full_checks_result() -> None:
    for cell, prefix in [("2125551234", "+1"), ("02125551234", "1"), ("9161234567", "7"), ("3012345678", "+49"), ("612345678", "+34")]:
        assert outcome(subscriber, cell, "RU", "Europe/Moscow", prefix) == outcome(full_check, cell, "RU", "Europe/Moscow", prefix)


digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=17)


@given(st.sampled_from(["", "+", "+7", "7", "8", "+1", "+49", "+86", "+380"]), digit_strings, st.sampled_from(["RU", "US", "KZ"]))
def test_any_digits_get_the_full_checks_result(head: str, tail: str, region: str) -> None:
    cell = head + tail
    assert outcome(subscriber, cell, region, "Europe/Moscow") == outcome(full_check, cell, region, "Europe/Moscow")


@given(st.text(alphabet="0123456789+ -()./exEtTl:#\u00a0\u200e٣", max_size=20))
def test_any_spreadsheet_spelling_gets_the_full_checks_result(cell: str) -> None:
    assert outcome(subscriber, cell, "RU", "Europe/Moscow") == outcome(full_check, cell, "RU", "Europe/Moscow")


def test_plus_and_digits_parse_to_what_phonenumbers_parses() -> None:
    texts = set()
    for e164 in EXAMPLES:
        digits = e164[1:]
        texts.update({e164, f"+{digits[:-1]}", f"+{digits}0", f"+{digits}12345678"})
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        # National prefixes (8, 0, 1, 0?15, ...) and leading zeros right after the country code.
        for rest in ("8", "0", "00", "1", "15", "9", "81234", "0123456789", "8123456789", "1123456789", "9123456789", "15123456"):
            texts.add(f"+{code}{rest}")
            texts.add(f"+{code}{rest}4567")
    assert len(texts) > 8000
    for text in sorted(texts):
        for region in ("RU", "US", "IT"):
            assert outcome(_parse, text, region) == outcome(phonenumbers.parse, text, region), (text, region)


@given(st.text(alphabet="0123456789", min_size=1, max_size=22), st.sampled_from(["RU", "US", "GB", "AR", "IT"]))
def test_any_plus_and_digits_parse_to_what_phonenumbers_parses(digits: str, region: str) -> None:
    assert outcome(_parse, f"+{digits}", region) == outcome(phonenumbers.parse, f"+{digits}", region)


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


def test_validity_is_phonenumbers_validity_for_every_kind_of_number() -> None:
    numbers = []
    for e164 in EXAMPLES:
        digits = e164[1:]
        for text in (e164, f"+{digits[:-1]}", f"+{digits}0", f"+{digits[:-1]}{(int(digits[-1]) + 5) % 10}"):
            try:
                numbers.append(phonenumbers.parse(text, None))
            except phonenumbers.NumberParseException:
                pass
    valid = 0
    for number in numbers:
        region = phonenumbers.region_code_for_number(number)
        for asked in {region, "US", "RU", "001", None}:
            assert _is_valid_for_region(number, asked) == phonenumbers.is_valid_number_for_region(number, asked), (number, asked)
        is_valid = phonenumbers.is_valid_number(number)
        assert _valid_region(number) == (region if is_valid else None), number
        valid += is_valid
    assert valid > 1000 and len(numbers) - valid > 1000
