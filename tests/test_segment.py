"""The SMS segmenter splits texts into parts exactly as GSM 03.38 concatenated SMS do.

Limits and examples verified against public documentation:
- Twilio, "How long can a message be?" (twilio.com/docs/glossary/what-sms-character-limit):
  GSM-7 160 characters in one segment, 153 per segment of a multi-segment message; UCS-2 70
  and 67. An earlier revision of the same page (widely quoted in SMS vendors' help pages) gave
  the example "a 161-character message will be sent as two messages: one with 153 characters and
  a second with eight characters". Twilio's "What the heck is a segment?" blog post explains
  the 140 octets and the concatenation header behind those numbers.
- Alibaba Cloud SMS "Message delivery rules": a 350-character message is three messages of 153,
  153 and 44 characters.
- Telnyx, "Smart encoding" (developers.telnyx.com/docs/messaging/messages/smart-encoding): a
  150-character message with smart quotes is UTF-16 in 3 segments, and GSM-7 in 1 segment with
  smart encoding on.
- The GSM 7-bit default alphabet and its extension table as in 3GPP TS 23.038 (the Wikipedia
  "GSM 03.38" table), written below by Unicode character name, position by position.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from tasks.compose.segment import count, segment

# 3GPP TS 23.038 basic table, positions 0x00..0x7F; None is 0x1B, the escape to the extension.
STANDARD_BASIC_TABLE = [
    "\N{COMMERCIAL AT}", "\N{POUND SIGN}", "\N{DOLLAR SIGN}", "\N{YEN SIGN}",
    "\N{LATIN SMALL LETTER E WITH GRAVE}", "\N{LATIN SMALL LETTER E WITH ACUTE}",
    "\N{LATIN SMALL LETTER U WITH GRAVE}", "\N{LATIN SMALL LETTER I WITH GRAVE}",
    "\N{LATIN SMALL LETTER O WITH GRAVE}", "\N{LATIN CAPITAL LETTER C WITH CEDILLA}",
    "\N{LINE FEED}", "\N{LATIN CAPITAL LETTER O WITH STROKE}",
    "\N{LATIN SMALL LETTER O WITH STROKE}", "\N{CARRIAGE RETURN}",
    "\N{LATIN CAPITAL LETTER A WITH RING ABOVE}", "\N{LATIN SMALL LETTER A WITH RING ABOVE}",
    "\N{GREEK CAPITAL LETTER DELTA}", "\N{LOW LINE}", "\N{GREEK CAPITAL LETTER PHI}",
    "\N{GREEK CAPITAL LETTER GAMMA}", "\N{GREEK CAPITAL LETTER LAMDA}",
    "\N{GREEK CAPITAL LETTER OMEGA}", "\N{GREEK CAPITAL LETTER PI}",
    "\N{GREEK CAPITAL LETTER PSI}", "\N{GREEK CAPITAL LETTER SIGMA}",
    "\N{GREEK CAPITAL LETTER THETA}", "\N{GREEK CAPITAL LETTER XI}", None,
    "\N{LATIN CAPITAL LETTER AE}", "\N{LATIN SMALL LETTER AE}", "\N{LATIN SMALL LETTER SHARP S}",
    "\N{LATIN CAPITAL LETTER E WITH ACUTE}",
    " ", "!", '"', "#", "\N{CURRENCY SIGN}", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/",
    *"0123456789:;<=>?",
    "\N{INVERTED EXCLAMATION MARK}", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "\N{LATIN CAPITAL LETTER A WITH DIAERESIS}", "\N{LATIN CAPITAL LETTER O WITH DIAERESIS}",
    "\N{LATIN CAPITAL LETTER N WITH TILDE}", "\N{LATIN CAPITAL LETTER U WITH DIAERESIS}",
    "\N{SECTION SIGN}",
    "\N{INVERTED QUESTION MARK}", *"abcdefghijklmnopqrstuvwxyz",
    "\N{LATIN SMALL LETTER A WITH DIAERESIS}", "\N{LATIN SMALL LETTER O WITH DIAERESIS}",
    "\N{LATIN SMALL LETTER N WITH TILDE}", "\N{LATIN SMALL LETTER U WITH DIAERESIS}",
    "\N{LATIN SMALL LETTER A WITH GRAVE}",
]  # fmt: skip
STANDARD_BASIC = frozenset(c for c in STANDARD_BASIC_TABLE if c is not None)
STANDARD_EXTENSION = frozenset(
    "\N{FORM FEED}\N{CIRCUMFLEX ACCENT}\N{LEFT CURLY BRACKET}\N{RIGHT CURLY BRACKET}"
    "\N{REVERSE SOLIDUS}\N{LEFT SQUARE BRACKET}\N{TILDE}\N{RIGHT SQUARE BRACKET}"
    "\N{VERTICAL LINE}\N{EURO SIGN}"
)
STANDARD_GSM = STANDARD_BASIC | STANDARD_EXTENSION

EMOJI = "\N{GRINNING FACE}"  # outside the BMP: a surrogate pair, 2 UTF-16 units


def septets(text: str) -> int:
    return sum(2 if c in STANDARD_EXTENSION else 1 for c in text)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- The alphabet -------------------------------------------------------------------------------


def test_standard_table_has_127_characters_and_10_extension_characters() -> None:
    assert len(STANDARD_BASIC_TABLE) == 128
    assert len(STANDARD_BASIC) == 127
    assert len(STANDARD_EXTENSION) == 10


def test_exactly_the_standard_alphabet_stays_gsm_7() -> None:
    gsm = {chr(c) for c in range(0x10000) if count(chr(c))[0] == "GSM-7"}
    assert gsm == STANDARD_GSM


def test_basic_table_character_costs_1_septet() -> None:
    text = "".join(sorted(STANDARD_BASIC))
    assert count(text) == ("GSM-7", 127, 1)


def test_extension_character_costs_2_septets() -> None:
    for char in STANDARD_EXTENSION:
        assert count(char) == ("GSM-7", 2, 1), repr(char)
    assert segment("{a}").units == 5


def test_80_extension_characters_fill_one_message_and_81_need_two() -> None:
    assert count("€" * 80) == ("GSM-7", 160, 1)
    assert count("€" * 81) == ("GSM-7", 162, 2)


def test_capital_c_cedilla_is_gsm_7_and_small_c_cedilla_is_not() -> None:
    assert count("Ça va") == ("GSM-7", 5, 1)
    assert count("ça va") == ("UCS-2", 5, 1)


def test_tab_switches_to_ucs_2() -> None:
    assert count("name\tvalue")[0] == "UCS-2"


def test_non_breaking_space_switches_to_ucs_2() -> None:
    assert count("10\N{NO-BREAK SPACE}EUR")[0] == "UCS-2"


def test_cr_and_lf_stay_gsm_7() -> None:
    assert count("line one\r\nline two\n") == ("GSM-7", 19, 1)


# --- GSM-7 part sizes ---------------------------------------------------------------------------


def test_160_gsm_characters_are_one_part() -> None:
    result = segment("a" * 160)
    assert (result.encoding, result.units, result.part_count) == ("GSM-7", 160, 1)


def test_161_gsm_characters_are_two_parts_of_153_and_8() -> None:
    # Twilio's documented example.
    result = segment("a" * 161)
    assert result.part_count == 2
    assert [len(p) for p in result.parts] == [153, 8]


def test_350_gsm_characters_are_153_153_and_44() -> None:
    # Alibaba Cloud's documented example.
    assert [len(p) for p in segment("c" * 350).parts] == [153, 153, 44]


def test_306_gsm_characters_are_two_parts() -> None:
    assert [len(p) for p in segment("b" * 306).parts] == [153, 153]


def test_307_gsm_characters_are_three_parts() -> None:
    assert [len(p) for p in segment("b" * 307).parts] == [153, 153, 1]


def test_extension_character_that_does_not_fit_moves_to_next_part() -> None:
    # 152 + 2 + 10 = 164 septets, so concatenated. The euro sign would take septets 153-154, so it
    # opens part 2 and part 1 carries 152. (152 plain + "€" alone is 154 septets: one message.)
    result = segment("a" * 152 + "€" + "c" * 10)
    assert result.parts == ("a" * 152, "€" + "c" * 10)
    assert result.units == 164


def test_extension_character_that_fits_exactly_stays_in_part() -> None:
    result = segment("a" * 151 + "€" + "c" * 10)
    assert result.parts == ("a" * 151 + "€", "c" * 10)


def test_152_plain_characters_and_euro_fit_one_message() -> None:
    assert count("a" * 152 + "€") == ("GSM-7", 154, 1)


# --- UCS-2 part sizes ---------------------------------------------------------------------------


def test_70_ucs_2_characters_are_one_part() -> None:
    assert count("ж" * 70) == ("UCS-2", 70, 1)


def test_71_ucs_2_characters_are_two_parts() -> None:
    assert [len(p) for p in segment("ж" * 71).parts] == [67, 4]


def test_134_ucs_2_characters_are_two_parts() -> None:
    assert [len(p) for p in segment("ж" * 134).parts] == [67, 67]


def test_135_ucs_2_characters_are_three_parts() -> None:
    assert [len(p) for p in segment("ж" * 135).parts] == [67, 67, 1]


def test_emoji_counts_two_utf16_units() -> None:
    assert count(EMOJI) == ("UCS-2", 2, 1)
    assert count("ж" * 68 + EMOJI) == ("UCS-2", 70, 1)
    assert count("ж" * 69 + EMOJI) == ("UCS-2", 71, 2)


def test_emoji_at_part_boundary_is_not_split() -> None:
    # The emoji would take units 67-68 of part 1: it opens part 2 instead.
    result = segment("ж" * 66 + EMOJI + "ж" * 10)
    assert result.parts == ("ж" * 66, EMOJI + "ж" * 10)
    assert result.units == 78


def test_cyrillic_text_is_ucs_2() -> None:
    text = "Ваш заказ доставлен. Спасибо!"
    assert count(text) == ("UCS-2", len(text), 1)


def test_one_cyrillic_letter_switches_long_latin_text_to_ucs_2() -> None:
    latin = "Your order has shipped. " * 6  # 144 characters: one GSM-7 message
    assert count(latin) == ("GSM-7", 144, 1)
    assert count(latin + "ё") == ("UCS-2", 145, 3)


# --- Empty text ---------------------------------------------------------------------------------


def test_empty_text_is_one_part_of_zero_units() -> None:
    result = segment("")
    assert (result.encoding, result.units, result.parts, result.part_count) == (
        "GSM-7",
        0,
        ("",),
        1,
    )
    assert count("") == ("GSM-7", 0, 1)


# --- Smart replacement --------------------------------------------------------------------------


def test_curly_quote_text_is_ucs_2_without_smart() -> None:
    assert count("It’s “ready” — pick it up…") == ("UCS-2", 26, 1)


def test_curly_quote_text_stays_gsm_7_with_smart() -> None:
    result = segment("It’s “ready” — pick it up…", smart=True)
    assert result.encoding == "GSM-7"
    assert result.parts == ("It's \"ready\" - pick it up...",)
    assert count("It’s “ready” — pick it up…", smart=True) == ("GSM-7", 28, 1)


def test_unicode_spaces_become_plain_spaces_with_smart() -> None:
    text = "10\N{NO-BREAK SPACE}EUR\N{NARROW NO-BREAK SPACE}net\tdue"
    assert segment(text, smart=True).parts == ("10 EUR net due",)


def test_telnyx_documented_smart_quote_example() -> None:
    text = "“" + "Hello, how are you? " * 7 + "Fine, ok" + "”"
    assert len(text) == 150
    assert count(text) == ("UCS-2", 150, 3)
    assert count(text, smart=True) == ("GSM-7", 150, 1)


def test_smart_leaves_text_that_stays_ucs_2_unchanged() -> None:
    text = "Заказ “42” готов"
    assert segment(text, smart=True).parts == (text,)


def test_smart_does_not_replace_when_it_would_cost_more_parts() -> None:
    text = "…" * 70  # 1 UCS-2 part, but 210 septets as "..."
    assert segment(text, smart=True) == segment(text)


# --- Properties ---------------------------------------------------------------------------------

# Any valid text: lone surrogates are not text (a separate test covers them).
any_char = st.characters(codec="utf-8")
# Mostly characters near the part limits' edge cases: GSM basic, extension, Cyrillic, emoji and
# look-alikes, plus anything at all.
interesting_chars = st.one_of(
    st.sampled_from(sorted(STANDARD_BASIC)),
    st.sampled_from(sorted(STANDARD_EXTENSION)),
    st.sampled_from("жЩё"),
    st.sampled_from([EMOJI, "\N{THUMBS UP SIGN}", "\N{CJK UNIFIED IDEOGRAPH-20000}"]),
    st.sampled_from("“”‘’—–…\N{NO-BREAK SPACE}\t"),
    any_char,
)
texts = st.one_of(
    st.text(interesting_chars, max_size=500),
    st.text(st.sampled_from(sorted(STANDARD_GSM)), min_size=150, max_size=480),
    st.text(st.sampled_from(["ж", EMOJI]), min_size=60, max_size=220),
    st.text(any_char, max_size=300),
)


def part_units(part: str, encoding: str) -> int:
    return septets(part) if encoding == "GSM-7" else utf16_units(part)


@given(texts, st.booleans())
@example("a" * 152 + "€" * 5, False)
@example("ж" * 66 + EMOJI * 3, False)
def test_parts_join_back_to_the_text(text: str, smart: bool) -> None:
    result = segment(text, smart=smart)
    # Smart replacement only ever happens to turn a UCS-2 text into GSM-7.
    if result.encoding == segment(text).encoding:
        assert "".join(result.parts) == text
    assert result.part_count == len(result.parts) >= 1


@given(texts, st.booleans())
def test_encoding_is_gsm_7_exactly_when_every_character_is_in_the_alphabet(
    text: str, smart: bool
) -> None:
    result = segment(text, smart=smart)
    sent = "".join(result.parts)
    assert (result.encoding == "GSM-7") == set(sent).issubset(STANDARD_GSM)
    assert result.units == part_units(sent, result.encoding)


@given(texts, st.booleans())
def test_every_part_is_within_its_limit_and_packed_greedily(text: str, smart: bool) -> None:
    result = segment(text, smart=smart)
    single, per_part = (160, 153) if result.encoding == "GSM-7" else (70, 67)
    units = [part_units(p, result.encoding) for p in result.parts]
    if len(result.parts) == 1:
        assert units[0] <= single
        return
    assert result.units > single
    assert all(0 < u <= per_part for u in units)
    # Greedy: the next part's first character would not have fitted.
    for part_units_used, next_part in zip(units, result.parts[1:]):
        assert part_units_used + part_units(next_part[0], result.encoding) > per_part


@given(texts)
def test_no_part_boundary_splits_a_surrogate_pair(text: str) -> None:
    result = segment(text)
    # Each part is whole UTF-16 on its own, and the parts' units add up to the text's.
    assert sum(utf16_units(p) for p in result.parts) == utf16_units(text)
    for part in result.parts:
        encoded = part.encode("utf-16-le")
        assert encoded.decode("utf-16-le") == part


@given(texts, st.booleans())
def test_count_agrees_with_segment(text: str, smart: bool) -> None:
    result = segment(text, smart=smart)
    assert count(text, smart=smart) == (result.encoding, result.units, result.part_count)


@given(texts)
def test_smart_never_costs_more_parts(text: str) -> None:
    assert count(text, smart=True)[2] <= count(text)[2]


def test_lone_surrogate_is_one_ucs_2_unit() -> None:
    # Not valid text, but a broken upstream decode must not crash intake.
    assert count("a\ud83d") == ("UCS-2", 2, 1)
