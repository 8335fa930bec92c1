"""Phone cells as spreadsheets write them, cleaned into E.164 numbers with the subscriber's time zone."""
from __future__ import annotations

import re
import unicodedata
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber, PhoneNumberType
from phonenumbers import timezone as phone_zones

from models.settings import Settings, get_settings
from tasks.schedule.windows import zone_for

# phonenumbers compiles its metadata's patterns on every use unless asked to keep them; a task file's
# numbers use the same few hundred over and over.
phonenumbers.enable_pattern_cache()

_PHONE_PUNCTUATION = re.compile(r"[()\-./]")
_EXTENSION = re.compile(r"(?:ext\.?|x|доб\.?|#)\d+$", re.IGNORECASE)
_SCIENTIFIC = re.compile(r"(\d)(?:[.,](\d+))?[eE]\+?(\d+)")
_WHOLE_WITH_ZEROS = re.compile(r"\d+\.0+")
_NOT_DIGIT_OR_PLUS = re.compile(r"[^0-9+]")
# A digit string long enough to hold a country code: read as international (with 00 as the dialling
# prefix most of the world uses, or without any) when the default region gives it no valid number.
_INTERNATIONAL_WITHOUT_PLUS = re.compile(r"00[1-9][0-9]{6,14}|[1-9][0-9]{10,14}")
# What most cells hold: nothing for the cleaning below to change, so it is skipped.
_PLAIN = re.compile(r"\+?[0-9]+")
# A number in E.164 form without a leading zero after its country code: see _international.
_E164 = re.compile(r"\+[1-9][0-9]{2,16}")
# Country code → its national prefix (as phonenumbers parses it, a pattern), or None when it has none.
_NATIONAL_PREFIXES: dict[int, re.Pattern[str] | None] = {}
_UNKNOWN = re.compile("")

# Country code → the zones phonenumbers gives a number of that code whose type is not geographical
# (the same for every such number of the code).
_COUNTRY_ZONES: dict[int, tuple[str, ...]] = {}
# (zones, region, account zone) → zone_for's choice, for the settings object whose country table it read.
_ZONES: tuple[Settings | None, dict[tuple[tuple[str, ...], str | None, str], str]] = (None, {})


def subscriber(value: Any, region: str, account_zone: str, prefix: str | None = None) -> tuple[str, str]:
    """The E.164 form of a phone cell and the subscriber's time zone, or ValueError saying why not."""
    number, number_type = _valid_number(value, region, prefix)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), _zone(number, number_type, account_zone)


def clean_phone(value: Any, region: str, prefix: str | None = None) -> phonenumbers.PhoneNumber:
    """Parse a phone cell into a valid number, or raise ValueError saying why.

    Takes what spreadsheets and people do to numbers: numeric cells (79123456789.0), scientific
    notation whose digits all survived (7.9123456789E10), Unicode and invisible spaces, full-width
    digits, brackets, dashes, a tel: prefix, an extension (dropped), national numbers as the default
    region writes them (trunk prefix 0 or 8), its international dialling prefix (00, 011, 810...), and
    international numbers written without +. Refuses letters (vanity numbers are never converted) and
    scientific notation Excel rounded (7.91235E+10: the real number is lost).
    """
    return _valid_number(value, region, prefix)[0]


def _valid_number(value: Any, region: str, prefix: str | None) -> tuple[PhoneNumber, int]:
    """The number phonenumbers reads in the cell in the default region, else as an international number.

    The default region comes first: a national number may be as long as an international one (a
    British 07911 123456, a Brazilian 011 91234 5678), and parse also takes the region's trunk
    prefix, its international dialling prefix and its own country code without +. Only a long digit
    string it gives no valid number is read as international (79161234567 in a British file).
    """
    text = _digits(value)
    if prefix and not text.startswith("+"):
        # The prefix is the country code of a national number: "+1" and "1" both mean +1.
        text = "+" + prefix.strip().lstrip("+") + text.lstrip("0")
    readings = [text]
    if _INTERNATIONAL_WITHOUT_PLUS.fullmatch(text):
        readings.append("+" + text.removeprefix("00"))
    for reading in readings:
        number = _international(reading)
        if number is None:
            try:
                number = phonenumbers.parse(reading, region)
            except phonenumbers.NumberParseException:
                continue
        number_type = phonenumbers.number_type(number)
        if number_type != PhoneNumberType.UNKNOWN:
            return number, number_type
    raise ValueError(
        "is not a valid phone number" + ("" if text.startswith("+") else f" in {region} nor with + before it")
        + "; write it with + and the country code"
    )


def _international(text: str) -> PhoneNumber | None:
    """What phonenumbers.parse(text) gives a plain E.164 number, else None (parse is then asked).

    parse first looks for a number in free text (extensions, RFC 3966, letters, Unicode digits): half
    the time of a task file's phone checks. For + and digits, after that search, it takes the country
    code (the first one to three digits that are one), then strips the country's national prefix when
    it starts the rest and marks Italian leading zeros. Numbers where either would apply are left to
    parse, so the rest is the country code and the digits after it. tests/test_phones_speed_paths.py
    holds this to parse on every country's example numbers and on any digits.
    """
    if not _E164.fullmatch(text):
        return None
    for length in (1, 2, 3):
        country_code = int(text[1:1 + length])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = text[1 + length:]
    if not 2 <= len(national) <= 17 or national[0] == "0":
        return None
    national_prefix = _NATIONAL_PREFIXES.get(country_code, _UNKNOWN)
    if national_prefix is _UNKNOWN:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, phonenumbers.region_code_for_country_code(country_code))
        if metadata is None:
            return None
        pattern = metadata.national_prefix_for_parsing
        national_prefix = _NATIONAL_PREFIXES[country_code] = re.compile(pattern) if pattern else None
    if national_prefix is not None and national_prefix.match(national):
        return None
    return PhoneNumber(country_code=country_code, national_number=int(national))


def _digits(value: Any) -> str:
    """The cell as the digits (and leading +) a person meant, or ValueError when they cannot be trusted."""
    if isinstance(value, bool):
        raise ValueError("is a true/false cell, not a phone number")  # noqa: TRY004 (a bad cell, refused like any other)
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a phone number")
        value = str(int(value))
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    if not text.isascii():
        # Full-width digits, plus and brackets (what East Asian keyboards type) become ASCII; other
        # scripts' digits (٣) become their ASCII digit.
        text = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in unicodedata.normalize("NFKC", text))
    text = "".join(c for c in text if unicodedata.category(c) not in ("Zs", "Cf", "Cc"))
    if text.lower().startswith("tel:"):
        text = text[4:]
    text = _EXTENSION.sub("", text)
    scientific = _SCIENTIFIC.fullmatch(text)
    if scientific:
        whole, decimals, exponent = scientific.group(1), scientific.group(2) or "", int(scientific.group(3))
        if len(decimals) > exponent:
            raise ValueError(f"{text} is not a whole number")
        if len(decimals) < exponent:
            raise ValueError(
                "was rounded by Excel (scientific notation lost its last digits); format the column as Text and type the full number"
            )
        text = whole + decimals
    elif _WHOLE_WITH_ZEROS.fullmatch(text):
        text = text.split(".", 1)[0]
    else:
        text = _PHONE_PUNCTUATION.sub("", text)
    if _NOT_DIGIT_OR_PLUS.search(text):
        raise ValueError("contains letters or symbols; write the number in digits")
    return text


def _zone(number: PhoneNumber, number_type: int, account_zone: str) -> str:
    """zone_for(time_zones_for_number(number), region_code_for_number(number), account_zone) for a valid number.

    phonenumbers gives a number of a geographical type (fixed line; mobile in some countries) the
    zones of its longest known E.164 prefix, and any other the zones of its country code: those are
    asked once per country code. zone_for's choice is kept per list of zones, region and account zone.
    """
    global _ZONES
    settings, cache = _ZONES
    if settings is not get_settings():  # zone_for's country table is a setting
        settings, cache = _ZONES = get_settings(), {}
    if phonenumbers.is_number_type_geographical(number_type, number.country_code):
        zones = phone_zones.time_zones_for_geographical_number(number)
    else:
        zones = _COUNTRY_ZONES.get(number.country_code)
        if zones is None:
            zones = _COUNTRY_ZONES[number.country_code] = tuple(phone_zones.time_zones_for_number(number))
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[number.country_code]
    # A code of one region is that region; region_code_for_number works out which of several it is.
    region = regions[0] if len(regions) == 1 else phonenumbers.region_code_for_number(number)
    key = (tuple(zones), region, account_zone)
    zone = cache.get(key)
    if zone is None:
        zone = cache[key] = zone_for(zones, region, account_zone)
    return zone
