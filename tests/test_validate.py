"""Row validation: phones as spreadsheets write them, and a precise reason for every refusal."""
from __future__ import annotations

import phonenumbers
import pytest

from models.errors import TaskFileError
from models.status import Channel
from tasks.intake.phones import clean_phone
from tasks.intake.validate import (
    Columns,
    RowError,
    ValidRow,
    normalise_header,
    validate_rows,
)


def _validate(header: list[str], *rows: list[object]) -> list[ValidRow | list[RowError]]:
    columns = Columns.from_header(header)
    numbered = [(i + 2, list(r)) for i, r in enumerate(rows)]
    return list(validate_rows(numbered, columns, region="RU", account_zone="Europe/Moscow",
                              default_channel=Channel.SMS, default_sender="notiflow"))


@pytest.mark.parametrize("header", ["Phone", " phone ", "PHONE", "phone_number", "Phone Number", "phone-number"])
def test_header_matching_ignores_case_spaces_and_underscores(header: str) -> None:
    assert Columns.from_header([header, "text"]).index["phone"] == 0


def test_normalise_header_folds_spacing() -> None:
    assert normalise_header("  Send_At ") == normalise_header("send at") == "send at"


@pytest.mark.parametrize(
    "cell",
    ["+79161234567", "79161234567", 79161234567, 79161234567.0, "8 (916) 123-45-67", "+7 916 123 45 67",
     "tel:+79161234567", "+7\u00a0916\u00a0123\u00a045\u00a067"],
)
def test_phone_written_any_spreadsheet_way_is_normalised_to_e164(cell: object) -> None:
    number = clean_phone(cell, "RU")
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == "+79161234567"


@pytest.mark.parametrize(
    ("cell", "reason"),
    [("not a number", "contains letters"), ("+7 916 123", "is not a valid phone number"), ("1-800-FLOWERS", "contains letters")],
)
def test_invalid_phone_is_rejected_with_reason(cell: str, reason: str) -> None:
    (errors,) = _validate(["phone", "text"], [cell, "hello"])
    assert isinstance(errors, list)
    assert errors[0].column == "phone" and errors[0].code == "invalid_phone"
    assert reason in errors[0].reason
    assert str(errors[0]).startswith('row 2, column "phone": ')


def test_every_error_of_a_row_is_reported_not_just_the_first() -> None:
    (errors,) = _validate(["phone", "text", "channel", "validity period"], ["123", "", "pigeon", 5000])
    assert isinstance(errors, list)
    assert {e.code for e in errors} == {"invalid_phone", "missing_text", "invalid_channel", "validity_period_out_of_range"}
    out_of_range = next(e for e in errors if e.column == "validity period")
    assert str(out_of_range) == 'row 2, column "validity period": 5000 is outside 1–2880 minutes'


def test_every_channel_of_the_spec_is_accepted_with_its_recipient() -> None:
    (viber,) = _validate(["phone", "text", "channel"], ["+79161234567", "hi", "viber"])
    assert isinstance(viber, ValidRow) and viber.channel is Channel.VIBER and viber.recipient == "+79161234567"

def test_blank_rows_are_skipped_and_row_numbers_are_excel_rows() -> None:
    results = _validate(["phone", "text"], ["+79161234567", "a"], ["", ""], ["+79161234568", "b"])
    assert [r.row for r in results if isinstance(r, ValidRow)] == [2, 4]


def test_valid_row_carries_recipient_zone_and_defaults() -> None:
    (row,) = _validate(["phone", "text", "external id"], ["+12125551234", "hi", 42])
    assert isinstance(row, ValidRow)
    assert (row.recipient, row.time_zone, row.sender, row.validity_period, row.external_id) == (
        "+12125551234", "America/New_York", "notiflow", 1440, "42")


def test_russian_number_in_many_zones_uses_the_country_default_zone() -> None:
    (row,) = _validate(["phone", "text"], ["+79161234567", "hi"])
    assert isinstance(row, ValidRow) and row.time_zone == "Europe/Moscow"


def test_file_without_recipient_column_is_refused_as_a_whole() -> None:
    with pytest.raises(TaskFileError, match='no recipient column: add a column named "phone"'):
        Columns.from_header(["name", "text"])


def test_file_whose_first_row_is_data_is_refused_for_lacking_a_header() -> None:
    with pytest.raises(TaskFileError, match="no header: row 1 holds data .*insert a first row with the column names"):
        Columns.from_header(["+79161234567", "Your code is 1234"])


def test_unknown_columns_are_listed() -> None:
    assert Columns.from_header(["phone", "text", "Favourite colour"]).unknown == ["Favourite colour"]


@pytest.mark.parametrize(
    "cell",
    ["7.9161234567E10", "7.9161234567E+10", "79161234567.0", "+7\u2009916\u2009123\u200945\u200967", "\u200e+79161234567\u200f",
     "+7 (916) 123-45-67 ext. 12", "+79161234567 доб. 345", "+7.916.123.45.67", "TEL:+79161234567"],
)
def test_more_spreadsheet_spellings_of_one_number(cell: object) -> None:
    number = clean_phone(cell, "RU")
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == "+79161234567"


@pytest.mark.parametrize(
    ("cell", "reason"),
    [("7.91612E+10", "rounded by Excel"), ("7.9161234567891E10", "not a whole number"), ("+1-800-FLOWERS", "letters"),
     (True, "true/false"), ("+7 916 123 45 67 #ab", "letters")],
)
def test_numbers_that_cannot_be_trusted_are_refused(cell: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        clean_phone(cell, "RU")


def test_prefix_column_gives_national_numbers_their_country() -> None:
    (row,) = _validate(["phone", "prefix", "text"], ["(212) 555-1234", "+1", "hi"])
    assert isinstance(row, ValidRow) and row.recipient == "+12125551234" and row.time_zone == "America/New_York"


def test_a_rows_channels_become_its_chain_each_with_its_own_recipient() -> None:
    header = ["phone", "email", "text", "channels"]
    (row,) = _validate(header, ["+79161234567", "anna@example.com", "Order ready", '["viber", "sms", "email"]'])
    assert isinstance(row, ValidRow) and row.channel is Channel.VIBER and row.send_order == "sequential" and not row.required
    assert [(s.channel, s.recipient, s.text, s.required) for s in row.chain] == [
        (Channel.SMS, "+79161234567", "Order ready", False), (Channel.EMAIL, "anna@example.com", "Order ready", False)]


def test_a_chain_channel_without_its_recipient_refuses_the_row_naming_both() -> None:
    (errors,) = _validate(["phone", "text", "channels"], ["+79161234567", "hi", '["sms", "email"]'])
    assert isinstance(errors, list)
    assert [(e.column, e.code) for e in errors] == [("email", "missing_email")]
    assert "email messages need the recipient's email" in errors[0].reason


def test_required_marks_the_channel_column_and_it_joins_the_chain() -> None:
    header = ["phone", "email", "text", "channel", "channels", "required", "send order"]
    (row,) = _validate(header, ["+79161234567", "a@example.com", "hi", "email", '["viber", "sms"]', "yes", "parallel"])
    assert isinstance(row, ValidRow) and row.channel is Channel.EMAIL and row.required and row.send_order == "parallel"
    assert [(s.channel, s.required) for s in row.chain] == [(Channel.VIBER, False), (Channel.SMS, False)]


def test_required_with_a_chain_and_no_channel_column_says_which_column_to_fill() -> None:
    (errors,) = _validate(["phone", "text", "channels", "required"], ["+79161234567", "hi", '["viber", "sms"]', True])
    assert isinstance(errors, list) and [(e.column, e.code) for e in errors] == [("required", "required_without_channel")]
    assert "write the channel sent regardless of the others in the channel column" in errors[0].reason


def test_a_row_of_one_channel_has_no_chain() -> None:
    (row,) = _validate(["phone", "text", "channel", "required"], ["+79161234567", "hi", "sms", True])
    assert isinstance(row, ValidRow) and row.chain == () and row.send_order is None and not row.required
