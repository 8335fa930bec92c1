"""Split an SMS text into parts exactly as GSM 03.38 / 3GPP TS 23.038 concatenated SMS do.

An SMS fee is the per-part price × the part count, so this module decides what a message costs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM_7: Final = "GSM-7"
UCS_2: Final = "UCS-2"

# A single SMS carries 140 octets of user data. A concatenated part spends 6 of them on the user
# data header (reference, part count, part number), which leaves 153 septets or 67 UTF-16 units.
GSM_7_SINGLE: Final = 160
GSM_7_PART: Final = 153
UCS_2_SINGLE: Final = 70
UCS_2_PART: Final = 67

# The GSM 7-bit default alphabet, in table order (column 0x00 first, top to bottom); position 0x1B
# is the escape to the extension table. 0x09 is the capital Ç per 3GPP TS 23.038 (some old phones
# showed ç). Tab and the non-breaking space are not in the alphabet. providers/sms_parts.py encodes
# with these tables, so what is counted here is what is sent.
GSM_BASIC_TABLE: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM_ESCAPE: Final = 0x1B
# Reached through the escape, so each costs 2 septets and the pair is never split across parts: the
# character and its code after the escape.
GSM_EXTENSION_CODES: Final = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
                              "|": 0x40, "€": 0x65}
_GSM_BASIC: Final = GSM_BASIC_TABLE.replace("\x1b", "")
_GSM_EXTENSION: Final = "".join(GSM_EXTENSION_CODES)

_NOT_GSM: Final = re.compile("[^" + re.escape(_GSM_BASIC + _GSM_EXTENSION) + "]")
_EXTENSION: Final = re.compile("[" + re.escape(_GSM_EXTENSION) + "]")
# Outside the Basic Multilingual Plane: a surrogate pair, 2 UTF-16 units, never split.
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")
# Most texts are ASCII: deleting the basic-table bytes in one C pass leaves only what needs a look.
_ASCII_BASIC: Final = bytes(c for c in range(128) if chr(c) in _GSM_BASIC)
_ASCII_EXTENSION: Final = bytes(c for c in range(128) if chr(c) in _GSM_EXTENSION)

# Look-alikes a pasted text picks up from word processors, mapped to the GSM characters they are
# read as. Only applied when the whole text then fits GSM-7 (see _measure).
_LOOKALIKE_GROUPS: Final[tuple[tuple[str, str], ...]] = (
    (
        "\N{LEFT-POINTING DOUBLE ANGLE QUOTATION MARK}"
        "\N{RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK}"
        "\N{LEFT DOUBLE QUOTATION MARK}\N{RIGHT DOUBLE QUOTATION MARK}"
        "\N{DOUBLE LOW-9 QUOTATION MARK}\N{DOUBLE HIGH-REVERSED-9 QUOTATION MARK}"
        "\N{DOUBLE PRIME}\N{REVERSED DOUBLE PRIME}\N{MODIFIER LETTER DOUBLE PRIME}"
        "\N{MODIFIER LETTER DOUBLE APOSTROPHE}\N{REVERSED DOUBLE PRIME QUOTATION MARK}"
        "\N{DOUBLE PRIME QUOTATION MARK}\N{FULLWIDTH QUOTATION MARK}"
        "\N{HEAVY DOUBLE TURNED COMMA QUOTATION MARK ORNAMENT}"
        "\N{HEAVY DOUBLE COMMA QUOTATION MARK ORNAMENT}",
        '"',
    ),
    (
        "\N{LEFT SINGLE QUOTATION MARK}\N{RIGHT SINGLE QUOTATION MARK}"
        "\N{SINGLE LOW-9 QUOTATION MARK}\N{SINGLE HIGH-REVERSED-9 QUOTATION MARK}"
        "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}"
        "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}"
        "\N{PRIME}\N{REVERSED PRIME}\N{MODIFIER LETTER PRIME}\N{MODIFIER LETTER TURNED COMMA}"
        "\N{MODIFIER LETTER APOSTROPHE}\N{MODIFIER LETTER REVERSED COMMA}"
        "\N{MODIFIER LETTER VERTICAL LINE}\N{MODIFIER LETTER ACUTE ACCENT}"
        "\N{MODIFIER LETTER GRAVE ACCENT}\N{ACUTE ACCENT}\N{GRAVE ACCENT}"
        "\N{FULLWIDTH APOSTROPHE}\N{HEAVY SINGLE TURNED COMMA QUOTATION MARK ORNAMENT}"
        "\N{HEAVY SINGLE COMMA QUOTATION MARK ORNAMENT}",
        "'",
    ),
    (
        "\N{HYPHEN}\N{NON-BREAKING HYPHEN}\N{FIGURE DASH}\N{EN DASH}\N{EM DASH}"
        "\N{HORIZONTAL BAR}\N{HYPHEN BULLET}\N{MINUS SIGN}\N{SMALL EM DASH}"
        "\N{SMALL HYPHEN-MINUS}\N{FULLWIDTH HYPHEN-MINUS}",
        "-",
    ),
    (
        "\N{CHARACTER TABULATION}\N{NO-BREAK SPACE}\N{OGHAM SPACE MARK}"
        + "".join(map(chr, range(0x2000, 0x200B)))  # en quad … hair space
        + "\N{NARROW NO-BREAK SPACE}\N{MEDIUM MATHEMATICAL SPACE}\N{IDEOGRAPHIC SPACE}",
        " ",
    ),
    ("\N{LINE SEPARATOR}\N{PARAGRAPH SEPARATOR}", "\n"),
    # Invisible anyway.
    ("\N{SOFT HYPHEN}\N{ZERO WIDTH SPACE}\N{WORD JOINER}\N{ZERO WIDTH NO-BREAK SPACE}", ""),
    ("\N{HORIZONTAL ELLIPSIS}", "..."),
    ("\N{TWO DOT LEADER}", ".."),
    ("\N{ONE DOT LEADER}", "."),
    ("\N{FRACTION SLASH}", "/"),
)
_LOOKALIKES: Final[dict[str, str]] = {
    char: gsm for chars, gsm in _LOOKALIKE_GROUPS for char in chars
}
_LOOKALIKE: Final = re.compile("[" + re.escape("".join(_LOOKALIKES)) + "]")
# A text holding anything else stays UCS-2 whatever is replaced, so it is not scanned further.
_NOT_GSM_NOR_LOOKALIKE: Final = re.compile(
    "[^" + re.escape(_GSM_BASIC + _GSM_EXTENSION + "".join(_LOOKALIKES)) + "]"
)

# encoding → (units in a single message, units per part of a concatenated one, 2-unit characters)
_LIMITS: Final[dict[Encoding, tuple[int, int, re.Pattern[str]]]] = {
    GSM_7: (GSM_7_SINGLE, GSM_7_PART, _EXTENSION),
    UCS_2: (UCS_2_SINGLE, UCS_2_PART, _ASTRAL),
}


@dataclass(frozen=True)
class Segmentation:
    """How a text travels as SMS: its encoding, its size in units, and the text of each part."""

    encoding: Encoding
    units: int  # septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2
    parts: tuple[str, ...]  # "".join(parts) is the text that is sent

    @property
    def part_count(self) -> int:
        """The number of parts billed; an empty text is still one part of 0 units."""
        return len(self.parts)


def segment(text: str, *, smart: bool = False) -> Segmentation:
    """Split `text` into the parts a carrier sends.

    With `smart`, Unicode look-alikes (curly quotes, long dashes, odd spaces, "…") are replaced by
    GSM characters when that makes the whole text GSM-7 in no more parts, and the parts then hold
    the replaced text: the caller keeps the original text for the report. Without `smart` nothing
    is replaced.
    """
    text, encoding, units = _measure(text, smart)
    single, per_part, two_unit = _LIMITS[encoding]
    if units <= single:
        return Segmentation(encoding, units, (text,))
    heavy = [m.start() for m in two_unit.finditer(text)]
    ends = _part_ends(len(text), heavy, per_part)
    starts = [0, *ends[:-1]]
    return Segmentation(encoding, units, tuple(text[a:b] for a, b in zip(starts, ends)))


def count(text: str, *, smart: bool = False) -> tuple[Encoding, int, int]:
    """(encoding, units, part count) of `text`, exactly as segment() gives them, without parts.

    This is the intake hot path: a plain text costs a few C-level passes and no per-character
    Python work; parts are walked only for long texts that hold 2-unit characters.
    """
    text, encoding, units = _measure(text, smart)
    return encoding, units, _part_count(text, encoding, units)


def _measure(text: str, smart: bool) -> tuple[str, Encoding, int]:
    """The text to send, its encoding and its size in units.

    Like Twilio's Smart Encoding, look-alikes are replaced only when that turns the whole text
    GSM-7: in a text that stays UCS-2 a replacement saves nothing. It must not cost more parts
    either ("…" is 1 UCS-2 unit but 3 septets).
    """
    extension = _gsm_extension_count(text)
    if extension is not None:
        return text, GSM_7, len(text) + extension
    units = len(text) + sum(1 for _ in _ASTRAL.finditer(text))
    if smart and _NOT_GSM_NOR_LOOKALIKE.search(text) is None:
        replaced = _LOOKALIKE.sub(_replacement, text)
        extension = _gsm_extension_count(replaced)
        if extension is not None:
            replaced_units = len(replaced) + extension
            if _part_count(replaced, GSM_7, replaced_units) <= _part_count(text, UCS_2, units):
                return replaced, GSM_7, replaced_units
    return text, UCS_2, units


def _replacement(match: re.Match[str]) -> str:
    return _LOOKALIKES[match.group()]


def _part_count(text: str, encoding: Encoding, units: int) -> int:
    single, per_part, two_unit = _LIMITS[encoding]
    if units <= single:
        return 1
    if units == len(text):  # every character is 1 unit: greedy packing is plain division
        return -(-units // per_part)
    heavy = [m.start() for m in two_unit.finditer(text)]
    return len(_part_ends(len(text), heavy, per_part))


def _gsm_extension_count(text: str) -> int | None:
    """How many extension-table characters `text` holds, or None when it is not GSM-7 at all."""
    if text.isascii():
        rest = text.encode("ascii").translate(None, _ASCII_BASIC)
        if rest.translate(None, _ASCII_EXTENSION):
            return None
        return len(rest)
    if _NOT_GSM.search(text) is not None:
        return None
    return sum(1 for _ in _EXTENSION.finditer(text))


def _part_ends(length: int, heavy: list[int], per_part: int) -> list[int]:
    """End index of each part when packing greedily `per_part` units per part.

    Characters at the sorted positions in `heavy` cost 2 units and never straddle a boundary (an
    escaped GSM character, a surrogate pair); every other character costs 1. The walk visits the
    heavy positions only, so a long plain stretch is skipped in one step.
    """
    ends: list[int] = []
    pos = 0  # first character not yet placed
    room = per_part  # units left in the current part
    for h in heavy:
        while h - pos >= room:  # the 1-unit run before h fills the current part
            pos += room
            ends.append(pos)
            room = per_part
        room -= h - pos
        if room < 2:  # one unit left: the 2-unit character opens the next part
            ends.append(h)
            room = per_part
        room -= 2
        pos = h + 1
    while length - pos > room:
        pos += room
        ends.append(pos)
        room = per_part
    ends.append(length)
    return ends
