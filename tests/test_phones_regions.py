"""Phone numbers as people write them in every region: national with its trunk prefix, international
with + or the region's dialling prefix, full-width digits, with NOTIFLOW_DEFAULT_REGION set to the
region the file comes from."""
from __future__ import annotations

from collections.abc import Iterator

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from models.settings import get_settings
from models.status import Channel
from tasks.intake.phones import clean_phone, subscriber
from tasks.intake.validate import Columns, ValidRow, validate_rows

REGIONS = [
    "GB", "DE", "IN", "BR", "KZ", "RU", "US", "CA", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "PL", "SE", "NO", "DK", "FI",
    "IE", "PT", "CZ", "UA", "TR", "CN", "JP", "KR", "AU", "NZ", "ZA", "MX", "AR", "CL", "CO", "EG", "NG", "IL", "AE", "SA",
    "SG", "ID", "TH", "VN", "PH", "UZ", "BY", "GE",
]


def _dialling_prefix(region: str) -> str | None:
    """What a caller in the region dials before a country code (00, 011, 810...), when it is one
    string of digits (Brazil's includes a choice of carrier)."""
    metadata = PhoneMetadata.metadata_for_region(region)
    assert metadata is not None
    prefix = metadata.preferred_international_prefix or metadata.international_prefix
    return prefix if prefix is not None and prefix.isdigit() else None


def _examples(region: str) -> Iterator[phonenumbers.PhoneNumber]:
    for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is not None:
            yield example


def _spellings(number: phonenumbers.PhoneNumber, region: str) -> list[str]:
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    dialling_prefix = _dialling_prefix(region)
    return [
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        international,
        "00 " + international[1:],
        *([dialling_prefix + " " + international[1:]] if dialling_prefix else []),
    ]


@pytest.fixture
def default_region(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _use_region(monkeypatch: pytest.MonkeyPatch, region: str) -> str:
    monkeypatch.setenv("NOTIFLOW_DEFAULT_REGION", region)
    get_settings.cache_clear()
    return get_settings().default_region


def _recipient(cell: object, region: str) -> str:
    """The recipient a task-file row with this phone gets, or the row's error."""
    (result,) = validate_rows([(2, [cell, "hello"])], Columns.from_header(["phone", "text"]), region=region,
                              account_zone="UTC", default_channel=Channel.SMS, default_sender="Notiflow")
    if isinstance(result, ValidRow):
        return result.recipient
    return str(result[0])


def test_example_numbers_of_every_region_in_national_and_international_writing(
    monkeypatch: pytest.MonkeyPatch, default_region: None
) -> None:
    assert len(REGIONS) >= 30
    checked = 0
    for region in REGIONS:
        setting = _use_region(monkeypatch, region)
        for number in _examples(region):
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            for cell in _spellings(number, region):
                assert _recipient(cell, setting) == e164, (region, cell)
                checked += 1
            # A full-width (East Asian keyboard) spelling of the national form too.
            wide = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL).translate(
                {ord(c): ord(c) + 0xFEE0 for c in "0123456789+()-"}
            )
            assert _recipient(wide, setting) == e164, (region, wide)
    assert checked > 300


@pytest.mark.parametrize(
    ("region", "cell", "e164"),
    [
        # Trunk prefix 0, spaces, brackets, an 11-digit national number starting with 0.
        ("GB", "07911 123456", "+447911123456"),
        ("GB", "07911123456", "+447911123456"),
        ("GB", "(020) 7946 0958", "+442079460958"),
        ("GB", "00 44 7911 123456", "+447911123456"),
        ("DE", "0151 12345678", "+4915112345678"),
        ("DE", "(030) 123456", "+4930123456"),
        ("DE", "0049 151 12345678", "+4915112345678"),
        ("IN", "098765 43210", "+919876543210"),
        ("IN", "09876543210", "+919876543210"),
        ("IN", "00 91 98765 43210", "+919876543210"),
        ("BR", "(11) 96123-4567", "+5511961234567"),
        ("BR", "011 96123-4567", "+5511961234567"),
        ("BR", "00 55 11 96123-4567", "+5511961234567"),
        # Trunk prefix 8 and the 8-10 international prefix of the former USSR.
        ("KZ", "8 (701) 123 45 67", "+77011234567"),
        ("KZ", "8 10 49 151 12345678", "+4915112345678"),
        ("RU", "8 (916) 123-45-67", "+79161234567"),
        ("RU", "810 44 7911 123456", "+447911123456"),
        ("US", "011 44 7911 123456", "+447911123456"),
        ("US", "(201) 555-0123", "+12015550123"),
        # A long number without + that is no number of the default region is international.
        ("GB", "79161234567", "+79161234567"),
        ("IN", "79161234567", "+79161234567"),
        # Full-width digits and plus.
        ("RU", "８ (９１６) １２３-４５-６７", "+79161234567"),
        ("JP", "＋８１ ９０-１２３４-５６７８", "+819012345678"),
        ("JP", "０９０-１２３４-５６７８", "+819012345678"),
    ],
)
def test_numbers_as_written_in_the_region(monkeypatch: pytest.MonkeyPatch, default_region: None, region: str, cell: str, e164: str) -> None:
    assert _recipient(cell, _use_region(monkeypatch, region)) == e164


def test_russian_spreadsheet_cells_keep_their_meaning() -> None:
    for cell in ["89161234567", 89161234567, "79161234567", 79161234567.0, "7.9161234567E10", "+7\u00a0916\u00a0123\u00a045\u00a067"]:
        assert phonenumbers.format_number(clean_phone(cell, "RU"), PhoneNumberFormat.E164) == "+79161234567", cell


def test_a_national_number_of_another_country_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"not a valid phone number in RU nor with \+ before it; write it with \+ and the country code"):
        subscriber("07911 123456", "RU", "Europe/Moscow")


def test_the_phone_module_uses_only_phonenumbers_public_names() -> None:
    """Private names (_is_number_matching_desc, _country_level_time_zones_for_number...) may change in any
    phonenumbers release."""
    import ast
    import inspect

    import tasks.intake.phones

    tree = ast.parse(inspect.getsource(tasks.intake.phones))
    private = [
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
    ] + [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("phonenumbers")
        for alias in node.names if alias.name.startswith("_")
    ] + [
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and "._" in (node.module or "")
    ]
    assert private == []
