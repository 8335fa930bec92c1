"""Phone cells as spreadsheets write them, cleaned into E.164 numbers with the subscriber's time zone."""
from __future__ import annotations

import re
import unicodedata
from typing import Any

import phonenumbers
from phonenumbers import timezone as phone_zones

from tasks.windows import zone_for

_PHONE_PUNCTUATION = re.compile(r"[()\-./]")
_EXTENSION = re.compile(r"(?:ext\.?|x|доб\.?|#)\d+$", re.IGNORECASE)
_SCIENTIFIC = re.compile(r"(\d)(?:[.,](\d+))?[eE]\+?(\d+)")


def subscriber(value: Any, region: str, account_zone: str, prefix: str | None = None) -> tuple[str, str]:
    """The E.164 form of a phone cell and the subscriber's time zone, or ValueError saying why not."""
    number = clean_phone(value, region, prefix)
    zone = zone_for(phone_zones.time_zones_for_number(number), phonenumbers.region_code_for_number(number), account_zone)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), zone


def clean_phone(value: Any, region: str, prefix: str | None = None) -> phonenumbers.PhoneNumber:
    """Parse a phone cell into a valid number, or raise ValueError saying why.

    Takes what spreadsheets do to numbers: numeric cells (79123456789.0), scientific notation whose
    digits all survived (7.9123456789E10), Unicode and invisible spaces, brackets, dashes, a tel:
    prefix, an extension (dropped), a leading 8 for Russian numbers. Refuses letters (vanity numbers
    are never converted) and scientific notation Excel rounded (7.91235E+10: the real number is lost).
    """
    if isinstance(value, bool):
        raise ValueError("is a true/false cell, not a phone number")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a phone number")
        value = str(int(value))
    text = "".join(c for c in str(value) if unicodedata.category(c) not in ("Zs", "Cf", "Cc"))
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
    elif re.fullmatch(r"\d+\.0+", text):
        text = text.split(".", 1)[0]
    else:
        text = _PHONE_PUNCTUATION.sub("", text)
    if re.search(r"[^\d+]", text):
        raise ValueError("contains letters or symbols; write the number in digits")
    if prefix and not text.startswith("+"):
        # The prefix is the country code of a national number: "+1" and "1" both mean +1.
        text = "+" + prefix.strip().lstrip("+") + text.lstrip("0")
    if region == "RU" and len(text) == 11 and text.startswith("8"):
        text = "+7" + text[1:]
    elif re.fullmatch(r"\d{11,15}", text):
        # A long number without + is international in every file we have seen (79123456789).
        text = "+" + text
    number = phonenumbers.parse(text, region)
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number")
    return number
