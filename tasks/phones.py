"""Phone cells as spreadsheets write them, cleaned into E.164 numbers with the subscriber's time zone."""
from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Any

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumber
from phonenumbers import timezone as phone_zones
from phonenumbers.phonenumberutil import _is_number_matching_desc as _matches_kind
from phonenumbers.re_util import re_compile

from models.settings import Settings, get_settings
from tasks.windows import zone_for

# phonenumbers compiles its metadata's patterns on every use unless asked to keep them; a task file's
# numbers use the same few hundred over and over.
phonenumbers.enable_pattern_cache()

_PHONE_PUNCTUATION = re.compile(r"[()\-./]")
_EXTENSION = re.compile(r"(?:ext\.?|x|доб\.?|#)\d+$", re.IGNORECASE)
_SCIENTIFIC = re.compile(r"(\d)(?:[.,](\d+))?[eE]\+?(\d+)")
_WHOLE_WITH_ZEROS = re.compile(r"\d+\.0+")
_NOT_DIGIT_OR_PLUS = re.compile(r"[^\d+]")
_INTERNATIONAL_WITHOUT_PLUS = re.compile(r"\d{11,15}")
# What most cells hold: nothing for the cleaning below to change, so it is skipped.
_PLAIN = re.compile(r"\+?[0-9]+")
# An international number as most files hold it: + and digits, no leading zero in the country code.
_PLUS_AND_DIGITS = re.compile(r"\+([1-9][0-9]{2,19})")

# id(region metadata) → (the metadata, kept alive so the id stays its own; its kinds of number, likeliest first).
_KINDS: dict[int, tuple[Any, tuple[Any, ...]]] = {}
# (time zones of the number's E.164 prefix, country code, region, account zone) → (zone by prefix, zone by
# country), for the settings object whose country table zone_for read.
_ZONES: tuple[Settings | None, dict[tuple[tuple[str, ...], int | None, str | None, str], tuple[str, str]]] = (None, {})


def subscriber(value: Any, region: str, account_zone: str, prefix: str | None = None) -> tuple[str, str]:
    """The E.164 form of a phone cell and the subscriber's time zone, or ValueError saying why not."""
    number, number_region = _valid_number(value, region, prefix)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), _zone(number, number_region, account_zone)


def clean_phone(value: Any, region: str, prefix: str | None = None) -> phonenumbers.PhoneNumber:
    """Parse a phone cell into a valid number, or raise ValueError saying why.

    Takes what spreadsheets do to numbers: numeric cells (79123456789.0), scientific notation whose
    digits all survived (7.9123456789E10), Unicode and invisible spaces, brackets, dashes, a tel:
    prefix, an extension (dropped), a leading 8 for Russian numbers. Refuses letters (vanity numbers
    are never converted) and scientific notation Excel rounded (7.91235E+10: the real number is lost).
    """
    return _valid_number(value, region, prefix)[0]


def _valid_number(value: Any, region: str, prefix: str | None) -> tuple[phonenumbers.PhoneNumber, str | None]:
    """The valid number and the region phonenumbers assigns it (None for a non-geographic entity's code)."""
    text = _digits(value)
    if prefix and not text.startswith("+"):
        # The prefix is the country code of a national number: "+1" and "1" both mean +1.
        text = "+" + prefix.strip().lstrip("+") + text.lstrip("0")
    if region == "RU" and len(text) == 11 and text.startswith("8"):
        text = "+7" + text[1:]
    elif _INTERNATIONAL_WITHOUT_PLUS.fullmatch(text):
        # A long number without + is international in every file we have seen (79123456789).
        text = "+" + text
    number = _parse(text, region)
    number_region = _valid_region(number)
    if number_region is None:
        raise ValueError("is not a valid phone number")
    return number, number_region


def _parse(text: str, region: str) -> PhoneNumber:
    """phonenumbers.parse(text, region), without its general machinery for the usual "+<digits>" text.

    For + and digits, parse takes the country code the digits start with (the shortest known one) and
    keeps the rest as the national number, whatever the region. It only does more when the country's
    national prefix starts the rest (it may strip it), when the rest starts with 0 (Italian leading
    zeros) or has a length it refuses: those texts, and all others, go through parse itself.
    """
    match = _PLUS_AND_DIGITS.fullmatch(text)
    if match is not None:
        digits = match.group(1)
        for length in (1, 2, 3):
            country_code = int(digits[:length])
            if country_code in COUNTRY_CODE_TO_REGION_CODE:
                national = digits[length:]
                prefix = _national_prefix(country_code)
                if 2 <= len(national) <= 17 and national[0] != "0" and (prefix is None or not prefix.match(national)):
                    return PhoneNumber(country_code=country_code, national_number=int(national))
                break
    return phonenumbers.parse(text, region)


@cache
def _national_prefix(country_code: int) -> re.Pattern[str] | None:
    """The pattern parse strips a national prefix by, for the country code's main region (None: no prefix)."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return re.compile("")  # matches every number, which then goes through parse
    pattern = metadata.national_prefix_for_parsing
    return re.compile(pattern) if pattern else None


def _valid_region(number: PhoneNumber) -> str | None:
    """phonenumbers.region_code_for_number(number) when phonenumbers.is_valid_number(number), else None.

    is_valid_number is region_code_for_number then is_valid_number_for_region. For a country code
    several regions share (+7: RU and KZ), region_code_for_number picks the first region whose
    leading digits match or, for a region without them, whose kinds of number one matches: then the
    number is valid there already, and its kinds are not matched a second time.
    """
    regions = COUNTRY_CODE_TO_REGION_CODE.get(number.country_code)
    if regions is None:
        return None
    if len(regions) == 1:
        return regions[0] if _is_valid_for_region(number, regions[0]) else None
    national = phonenumbers.national_significant_number(number)
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if re_compile(metadata.leading_digits).match(national):
                return region if _is_valid_for_region(number, region) else None
        elif _has_known_kind(national, metadata):
            return region
    return None


def _is_valid_for_region(number: PhoneNumber, region: str | None) -> bool:
    """phonenumbers.is_valid_number_for_region(number, region)."""
    if region is None:
        return False
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(number.country_code, region.upper())
    if metadata is None or (
        region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY and number.country_code != phonenumbers.country_code_for_valid_region(region)
    ):
        return False
    return _has_known_kind(phonenumbers.national_significant_number(number), metadata)


def _has_known_kind(national: str, metadata: PhoneMetadata) -> bool:
    """Whether phonenumbers knows the number's type in the region, trying the usual kinds of number first.

    phonenumbers knows a type when the number matches the region's general pattern and one of the
    kinds' patterns, tried premium rate first and mobile last (mobile only when its pattern differs
    from fixed line's). Whether any matches does not depend on the order, so mobile and fixed line,
    what task files hold, are tried first.
    """
    if not _matches_kind(national, metadata.general_desc):
        return False
    kinds = _KINDS.get(id(metadata))
    if kinds is None:
        mobile = () if metadata.same_mobile_and_fixed_line_pattern else (metadata.mobile,)
        kinds = _KINDS[id(metadata)] = (metadata, (*mobile, metadata.fixed_line, metadata.premium_rate, metadata.toll_free,
                                                   metadata.shared_cost, metadata.voip, metadata.personal_number,
                                                   metadata.pager, metadata.uan, metadata.voicemail))
    for kind in kinds[1]:
        if kind is not None and _matches_kind(national, kind):
            return True
    return False


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


def _zone(number: phonenumbers.PhoneNumber, number_region: str | None, account_zone: str) -> str:
    """zone_for(time_zones_for_number(number), number_region, account_zone), without the number's type when it cannot matter.

    phonenumbers gives a valid number the zones of its longest known E.164 prefix when its type is
    geographical (fixed line; mobile in some countries) and the zones of its country code otherwise.
    Both lists, and so both candidate zones, follow from the prefix's list, the country code and the
    region, which key the cache; the type (as costly as the validity check) is only worked out when
    the two candidates differ. A Russian mobile number gets Europe/Moscow either way.
    """
    global _ZONES
    settings, cache = _ZONES
    if settings is not get_settings():  # zone_for's country table is a setting
        settings, cache = _ZONES = get_settings(), {}
    by_prefix_zones = phone_zones.time_zones_for_geographical_number(number)
    key = (by_prefix_zones, number.country_code, number_region, account_zone)
    zones = cache.get(key)
    if zones is None:
        by_country_zones = phone_zones._country_level_time_zones_for_number(number)
        zones = cache[key] = (
            zone_for(by_prefix_zones, number_region, account_zone), zone_for(by_country_zones, number_region, account_zone),
        )
    by_prefix, by_country = zones
    if by_prefix == by_country:
        return by_prefix
    geographical = phonenumbers.is_number_type_geographical(phonenumbers.number_type(number), number.country_code)
    return by_prefix if geographical else by_country
