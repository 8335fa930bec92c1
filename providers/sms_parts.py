"""An SMS text as the user data an SMSC takes: GSM-7 septets or UCS-2 octets, cut into the parts notiflow
counted and bills, each part of a long text led by a concatenation header (UDH) naming its place.

The cut is the one tasks/compose/segment.py counts (153 septets or 67 UTF-16 units a part, an escaped
GSM character or a surrogate pair never split), made here on the encoded octets: a message must go in
exactly the number of parts it was billed for, so a text that would not is refused, never sent otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tasks.compose.segment import GSM_BASIC_TABLE, GSM_ESCAPE, GSM_EXTENSION_CODES

# SMPP data_coding: 0 is the SMSC's default alphabet (GSM 03.38, one septet per octet on the wire), 8 is UCS-2.
GSM_7_CODING: Final = 0x00
UCS_2_CODING: Final = 0x08
# esm_class bit: the short message starts with a user data header.
UDHI: Final = 0x40

_SEPTETS: Final[dict[str, bytes]] = {
    **{char: bytes([code]) for code, char in enumerate(GSM_BASIC_TABLE) if code != GSM_ESCAPE},
    **{char: bytes([GSM_ESCAPE, code]) for char, code in GSM_EXTENSION_CODES.items()},
}

# encoding → (data_coding, octets in a single message, octets in each part of a concatenated one)
_LIMITS: Final = {
    "GSM-7": (GSM_7_CODING, 160, 153),
    "UCS-2": (UCS_2_CODING, 140, 134),
}


@dataclass(frozen=True)
class UserData:
    """What travels in a message's submit_sm PDUs: one short_message per part, header included."""

    data_coding: int
    esm_class: int
    parts: tuple[bytes, ...]


def user_data(text: str, encoding: str, parts: int, reference: int) -> UserData:
    """`text` encoded and cut into `parts` parts; `reference` (0–255) ties the parts of one message together.

    ValueError, saying why, when the text is not in `encoding` or does not make `parts` parts in it.
    """
    if encoding not in _LIMITS:
        raise ValueError(f"encoding {encoding!r} cannot be sent by SMPP; it is GSM-7 or UCS-2")
    data_coding, single, per_part = _LIMITS[encoding]
    encoded = _gsm_7(text) if encoding == "GSM-7" else text.encode("utf-16-be")
    chunks = [encoded] if len(encoded) <= single else _cut(encoded, per_part, encoding)
    if len(chunks) != parts:
        raise ValueError(
            f"the text makes {len(chunks)} {encoding} parts, not the {parts} it was counted and billed as; not sent"
        )
    if len(chunks) == 1:
        return UserData(data_coding, 0, (encoded,))
    if len(chunks) > 255:
        raise ValueError(f"the text makes {len(chunks)} parts; a concatenated SMS has at most 255")
    total = len(chunks)
    # IEI 0x00: concatenated message with an 8-bit reference; the 6 octets the part sizes leave room for.
    headers = (bytes([5, 0x00, 3, reference & 0xFF, total, number]) for number in range(1, total + 1))
    return UserData(data_coding, UDHI, tuple(header + chunk for header, chunk in zip(headers, chunks)))


def _gsm_7(text: str) -> bytes:
    try:
        return b"".join(_SEPTETS[char] for char in text)
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not in the GSM 7-bit alphabet; the text is UCS-2") from None


def _cut(encoded: bytes, per_part: int, encoding: str) -> list[bytes]:
    """Greedy parts of at most `per_part` octets, never ending between an escape and its character (GSM-7) or
    between the two halves of a surrogate pair (UCS-2)."""
    chunks: list[bytes] = []
    start = 0
    while len(encoded) - start > per_part:
        end = start + per_part
        if encoding == "GSM-7":
            # An extension character's second septet is never 0x1B, so a 0x1B last is always an escape.
            if encoded[end - 1] == GSM_ESCAPE:
                end -= 1
        elif 0xD8 <= encoded[end - 2] <= 0xDB:  # a high surrogate last: its low half opens the next part
            end -= 2
        chunks.append(encoded[start:end])
        start = end
    chunks.append(encoded[start:])
    return chunks
