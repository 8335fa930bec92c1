"""Every column of the full param list: what each accepts, the exact reason for what it refuses."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlmodel import Session

from models.status import Channel
from models.tables import Message, Rejection
from tasks.intake.columns import ALIASES, BY_NAME, COLUMNS, parse_bool
from tasks.intake.intake import intake
from tasks.intake.phones import clean_phone
from tasks.intake.validate import Columns, RowError, ValidRow, keep_first_unique, normalise_header, validate_rows
from tests.files import phones, write_xlsx
from tests.test_steps import make_task_from

PHONE = "+79161234567"


def check(header: list[str], *rows: list[Any]) -> list[ValidRow | list[RowError]]:
    columns = Columns.from_header(header)
    numbered = [(i + 2, list(r)) for i, r in enumerate(rows)]
    return list(keep_first_unique(validate_rows(
        numbered, columns, region="RU", account_zone="Europe/Moscow", default_channel=Channel.SMS, default_sender="notiflow",
    )))


def one(column: str, value: Any, **extra: Any) -> ValidRow | list[RowError]:
    header = ["phone", "text", column, *extra]
    (result,) = check(header, [PHONE, "hi", value, *extra.values()])
    return result


def errors(result: ValidRow | list[RowError]) -> list[tuple[str, str, str]]:
    assert isinstance(result, list), f"the row was accepted: {result}"
    return [(e.column, e.code, e.reason) for e in result]


# --- the table of bad rows and the exact reason each gets ---------------------------------------

BAD_ROWS: list[tuple[str, Any, str, str, str]] = [
    # column, value, column named, code, reason
    ("validity period", 0, "validity period", "validity_period_out_of_range", "0 is outside 1–2880 minutes"),
    ("validity period", 2881, "validity period", "validity_period_out_of_range", "2881 is outside 1–2880 minutes"),
    ("validity period", "1.5", "validity period", "invalid_validity_period",
     "'1.5' is not a whole number; write one from 1 to 2880 minutes"),
    ("count", 1001, "count", "count_out_of_range", "1001 is outside 1–1000"),
    ("count", "ten", "count", "invalid_count", "'ten' is not a whole number; write one from 1 to 1000"),
    ("timeout", 999, "timeout", "timeout_out_of_range", "999 is outside 1000–60000 ms"),
    ("timeout", 60001, "timeout", "timeout_out_of_range", "60001 is outside 1000–60000 ms"),
    ("button text", "Open your order today!", "button text", "invalid_button_text",
     "is 22 characters long; at most 20 are allowed"),
    ("priority", "urgent", "priority", "invalid_priority", "'urgent' is not allowed; use one of high, normal, low"),
    ("send order", "random", "send order", "invalid_send_order", "'random' is not allowed; use one of sequential, parallel"),
    ("send mode", "later", "send mode", "invalid_send_mode", "'later' is not allowed; use one of auto, manual"),
    ("message type", "gif", "message type", "invalid_message_type",
     "'gif' is not allowed; use one of text, image, video, audio, document"),
    ("recipient type", "team", "recipient type", "invalid_recipient_type", "'team' is not allowed; use one of individual, group"),
    ("messenger type", "icq", "messenger type", "invalid_messenger_type",
     "'icq' is not allowed; use one of whatsapp, viber, facebook, telegram, slack, imessage"),
    ("channel", "pigeon", "channel", "invalid_channel",
     "'pigeon' is not allowed; use one of sms, email, push, viber, whatsapp, telegram, vk, ok, chat"),
    ("required", "maybe", "required", "invalid_required", "'maybe' is not true or false (also 1/0, yes/no)"),
    ("use short links", 2, "use short links", "invalid_use_short_links", "'2' is not true or false (also 1/0, yes/no)"),
    ("variables", '["Anna"]', "variables", "invalid_variables", 'is list JSON; write a JSON object like {"name": "Anna"}'),
    ("variables", "{name: Anna}", "variables", "invalid_variables",
     'is not valid JSON (Expecting property name enclosed in double quotes); write a JSON object like {"name": "Anna"}'),
    ("callback data", "x" * 10241, "callback data", "invalid_callback_data",
     "is 10241 bytes long (UTF-8); at most 10240 are allowed"),
    ("callback url", "https://example.com/" + "a" * 3981, "callback url", "invalid_callback_url",
     "is 4001 bytes long; at most 4000 are allowed"),
    ("callback url", "example.com/status", "callback url", "invalid_callback_url",
     "'example.com/status' is not a link; write a full address starting with http:// or https://"),
    ("external id", "я" * 5121, "external id", "invalid_external_id", "is 10242 bytes long (UTF-8); at most 10240 are allowed"),
    ("unique message id", "€" * 3414, "unique message id", "invalid_unique_message_id",
     "is 10242 bytes long (UTF-8); at most 10240 are allowed"),
    ("channels", '["viber", "fax"]', "channels", "invalid_channels",
     '"fax" is not a channel; use chat, email, ok, push, sms, telegram, viber, vk, whatsapp'),
    ("channels", '["sms", "sms"]', "channels", "invalid_channels",
     "names a channel twice; list each channel once, in the order to try them"),
    ("allowed time ranges", '[["09:00:00", "13:00:00"], ["12:00:00", "20:00:00"]]', "allowed time ranges",
     "invalid_allowed_time_ranges", "has ranges that overlap; give ranges that do not overlap"),
    ("allowed time ranges", '[["20:00:00", "09:00:00"]]', "allowed time ranges", "invalid_allowed_time_ranges",
     'range ["20:00:00", "09:00:00"] ends before it starts; split a range across midnight in two'),
    ("allowed time ranges", '[["9am", "5pm"]]', "allowed time ranges", "invalid_allowed_time_ranges",
     "'9am' is not a time like \"09:00:00\""),
    ("attachments", ",".join(f"photo-1_{i}" for i in range(11)), "attachments", "invalid_attachments",
     "has 11 attachments; at most 10 are allowed"),
    ("attachments", "photo_1", "attachments", "invalid_attachments",
     "'photo_1' is not an attachment like photo-123_456 (<type><[-]owner_id>_<media_id>)"),
    ("button", '{"text": "Go", "colour": "red"}', "button", "invalid_button",
     "has unknown keys colour; a button has text, payload and url"),
    ("button", '{"text": "Open this order right now"}', "button", "invalid_button", "has a text longer than 20 characters"),
    ("media url", "ftp://example.com/a.pdf", "media url", "invalid_media_url",
     "'ftp://example.com/a.pdf' is not a link; write a full address starting with http:// or https://"),
    ("start date", "2026/12/01", "start date", "invalid_start_date", "'2026/12/01' is not a date; write YY-MM-DD, e.g. 26-12-01"),
    ("start time", "25-00-00", "start time", "invalid_start_time",
     "'25-00-00' is not a time of day; write HH-MM-SS, e.g. 10-30-00"),
    ("send at", "tomorrow", "send at", "invalid_send_at",
     "'tomorrow' is not a date and time; write YY-MM-DD HH:MM:SS, e.g. 26-12-01 10:30:00"),
    ("push registration id", "fcm token 1", "push registration id", "invalid_push_registration_id",
     "'fcm token 1' contains spaces; a device token is one unbroken string"),
    ("email", "anna@", "email", "invalid_email", "'anna@' is not an e-mail address like name@example.com"),
    ("language", "Russian", "language", "invalid_language", "'Russian' is not a language code like ru or en"),
    ("platform", "Symbian", "platform", "invalid_platform", "'Symbian' is not allowed; use one of iOS, Android, Web"),
    ("provider", "acme", "provider", "invalid_provider", "'acme' is not allowed; use one of sandbox"),
    ("payment data", '{"card_number": "4111111111111111", "cvv": "123"}', "payment data", "invalid_payment_data",
     "has keys other than card_number and transaction_id (cvv); remove them: payment data keeps only the card number "
     "and the transaction id (never a CVV)"),
    ("error codes", '{"a": 1}', "error codes", "invalid_error_codes", "is dict JSON; write a JSON list like [1, 2]"),
    ("filters", "[1]", "filters", "invalid_filters", 'is list JSON; write a JSON object like {"operator": "MTS"}'),
]


@pytest.mark.parametrize(("column", "value", "named", "code", "reason"), BAD_ROWS, ids=[f"{r[0]}={str(r[1])[:20]}" for r in BAD_ROWS])
def test_bad_cell_gets_its_exact_reason(column: str, value: Any, named: str, code: str, reason: str) -> None:
    result = one(column, value)
    assert errors(result) == [(named, code, reason)]
    assert str(result[0]).startswith(f'row 2, column "{named}": ')  # type: ignore[index]


@pytest.mark.parametrize(
    ("channel", "header", "values", "missing"),
    [
        ("email", ["phone", "text", "channel"], [PHONE, "hi", "email"], [("email", "missing_email")]),
        ("push", ["phone", "text", "channel", "push registration id"], [PHONE, "hi", "push", "tok-1"], [("platform", "missing_platform")]),
        ("whatsapp", ["phone", "text", "channel", "template name", "templatenamespace"], [PHONE, "hi", "whatsapp", "order", None],
         [("templatenamespace", "missing_templatenamespace")]),
        ("chat", ["phone", "text", "channel", "chat id"], [PHONE, "hi", "chat", "c-1"],
         [("template name", "missing_template_name"), ("bot id", "missing_bot_id"), ("chat session name", "missing_chat_session_name"),
          ("continue last or start new session", "missing_continue_last_or_start_new_session")]),
        ("sms", ["email", "text"], ["anna@example.com", "hi"], [("phone", "missing_phone")]),
    ],
)
def test_channel_names_the_columns_it_requires(channel: str, header: list[str], values: list[Any], missing: list[tuple[str, str]]) -> None:
    (result,) = check(header, values)
    assert [(column, code) for column, code, _reason in errors(result)] == missing
    assert all(f"{channel} messages need" in reason for _c, _code, reason in errors(result))


def test_each_channel_takes_its_own_recipient() -> None:
    header = ["phone", "email", "push registration id", "platform", "chat id", "bot id", "chat session name",
              "continue last or start new session", "template name", "templatenamespace", "messenger user id", "text", "channel"]
    base = {"phone": None, "email": "anna@example.com", "push registration id": "tok-1", "platform": "android", "chat id": "c-9",
            "bot id": "b1", "chat session name": "Orders", "continue last or start new session": "yes", "template name": "order",
            "templatenamespace": "ns", "messenger user id": "89161234567", "text": "hi"}
    rows = [[*base.values(), channel] for channel in ("email", "push", "chat", "whatsapp")]
    email, push, chat, whatsapp = check(header, *rows)
    assert isinstance(email, ValidRow) and email.recipient == "anna@example.com" and email.time_zone == "Europe/Moscow"
    assert isinstance(push, ValidRow) and push.recipient == "tok-1" and push.params["platform"] == "Android"
    assert isinstance(chat, ValidRow) and chat.recipient == "c-9" and chat.params["continue last or start new session"] is True
    assert isinstance(whatsapp, ValidRow) and whatsapp.recipient == PHONE and whatsapp.template_name == "order"


def test_channels_list_picks_the_first_when_channel_is_empty() -> None:
    result = one("channels", '["Viber", "sms"]')
    assert isinstance(result, ValidRow) and result.channel is Channel.VIBER and result.params["channels"] == ["viber", "sms"]


def test_params_keep_typed_values_hide_secrets_and_mask_the_card() -> None:
    header = ["phone", "text", "Priority", "Count", "Send_At", "Start Date", "start time", "Allowed Time Ranges", "Callback URL",
              "Payment Data", "Password", "Secret Key", "Force Send", "Attachments", "Language"]
    (result,) = check(header, [
        PHONE, "hi", "HIGH", 10.0, "26-12-01 10:30:00", date(2026, 12, 2), time(9, 15), '[["10:00", "12:00"]]',
        "https://example.com/cb", '{"card_number": "4111 1111 1105 1234", "transaction_id": "t-1"}', "hunter2", "s3cr3t", "TRUE",
        "photo-1_2, doc3_4", "RU",
    ])
    assert isinstance(result, ValidRow)
    assert result.params == {
        "priority": "high", "count": 10, "send at": "2026-12-01T10:30:00", "start date": "2026-12-02", "start time": "09:15:00",
        "callback url": "https://example.com/cb",
        "payment data": {"card_number": "**** 1234", "transaction_id": "t-1"}, "force send": True,
        "attachments": ["photo-1_2", "doc3_4"], "language": "ru",
    }
    assert result.windows == ["10:00-12:00"]
    assert result.not_before == datetime(2026, 12, 2, 6, 15, tzinfo=UTC)  # start date + time, later than send at, Moscow time
    assert "hunter2" not in json.dumps(result.params) and "s3cr3t" not in json.dumps(result.params)


def test_an_email_row_keeps_its_subject_for_the_email() -> None:
    (result,) = check(["email", "text", "channel", "E-mail Subject"], ["anna@example.com", "Your order is ready", "email", "Order 1001"])
    assert isinstance(result, ValidRow) and result.channel is Channel.EMAIL and result.params == {"subject": "Order 1001"}
    (too_long,) = check(["email", "text", "channel", "subject"], ["anna@example.com", "hi", "email", "x" * 256])
    assert errors(too_long) == [("subject", "invalid_subject", "is 256 characters long; at most 255 are allowed")]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("26-12-01 10:30:00", "2026-12-01T10:30:00"), ("2026-12-01 10:30", "2026-12-01T10:30:00"),
     ("2026-12-01T10:30:00+03:00", "2026-12-01T10:30:00+03:00"), ("01.12.2026 10:30", "2026-12-01T10:30:00"),
     (datetime(2026, 12, 1, 10, 30), "2026-12-01T10:30:00")],
)
def test_send_at_takes_the_formats_of_the_spec_and_excel_cells(cell: Any, expected: str) -> None:
    result = one("send at", cell)
    assert isinstance(result, ValidRow) and result.params["send at"] == expected


def test_unknown_columns_are_listed_not_dropped_silently() -> None:
    columns = Columns.from_header(["phone", "text", "Favourite colour", "priority"])
    assert columns.unknown == ["Favourite colour"] and "priority" in columns.index


def test_repeated_unique_message_id_is_refused_and_the_first_kept() -> None:
    results = check(["phone", "text", "unique message id"], [PHONE, "a", "u-1"], ["+79161234568", "b", "u-2"], [PHONE, "c", "u-1"])
    assert [type(r).__name__ for r in results] == ["ValidRow", "ValidRow", "list"]
    assert errors(results[2]) == [("unique message id", "duplicate_unique_message_id",
                                   "repeats the unique message id of row 2; only the first is kept")]


# --- property tests -------------------------------------------------------------------------------

def _spelling(draw: st.DrawFn, name: str) -> str:
    """A way a person might write header `name`: any case, spaces, underscores or dashes, padding."""
    words = name.split(" ")
    cased = [draw(st.sampled_from([w, w.upper(), w.title(), w.capitalize()])) for w in words]
    glue = draw(st.lists(st.sampled_from([" ", "_", "-", "  ", " _ "]), min_size=len(words) - 1, max_size=len(words) - 1))
    joined = cased[0] + "".join(g + w for g, w in zip(glue, cased[1:]))
    return draw(st.sampled_from(["", " ", "\t"])) + joined + draw(st.sampled_from(["", " "]))


@given(st.data())
def test_any_spelling_of_a_header_names_its_column(data: st.DataObject) -> None:
    column = data.draw(st.sampled_from(COLUMNS))
    alias = data.draw(st.sampled_from((column.name, *column.aliases)))
    header = data.draw(st.composite(lambda draw: _spelling(draw, alias))())
    assert ALIASES[normalise_header(header)] == column.name


@given(st.sampled_from(["true", "false", "1", "0", "yes", "no", "y", "n", "on", "off"]).flatmap(
    lambda w: st.tuples(st.just(w), st.sampled_from([w, w.upper(), w.title(), f" {w} "]))))
def test_boolean_spellings_in_any_case(pair: tuple[str, str]) -> None:
    word, written = pair
    assert parse_bool(written) is (word in ("true", "1", "yes", "y", "on"))


@given(st.one_of(st.booleans(), st.sampled_from([0, 1, 0.0, 1.0])))
def test_excel_booleans_and_numbers(value: Any) -> None:
    assert parse_bool(value) is bool(value)


@given(st.text(min_size=1).filter(lambda t: t.strip().lower() not in {"true", "false", "1", "0", "yes", "no", "y", "n", "on", "off", "да", "нет"}))
def test_anything_else_is_not_a_boolean(value: str) -> None:
    with pytest.raises(ValueError, match="is not true or false"):
        parse_bool(value)


# JSON text as cells hold it: no control characters (a cell with one is refused, see test_json_control_escape_is_refused).
printable = st.characters(blacklist_categories=("Cc", "Cs"))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(printable, max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(st.text(printable, max_size=8), inner, max_size=4)),
                           max_leaves=12)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(printable, max_size=10), json_values, max_size=5))
def test_json_objects_round_trip_through_object_columns(value: dict[str, Any]) -> None:
    written = json.dumps(value, ensure_ascii=False)
    for name in ("variables", "filters", "send rules"):
        assert BY_NAME[name].parse(written) == value
    assert BY_NAME["callback data"].parse(written) == value


@pytest.mark.parametrize("name", ["variables", "callback data", "template data", "payment data"])
@pytest.mark.parametrize("escape", ["\\u0000", "\\u001b", "\\u007f", "\\u0085"])
def test_json_control_escape_is_refused(name: str, escape: str) -> None:
    """A JSON escape would put a control character (NUL: PostgreSQL refuses it) into the stored row or the text."""
    with pytest.raises(ValueError, match="holds the control character"):
        BY_NAME[name].parse('{"name": "a%sb"}' % escape)
    assert BY_NAME["variables"].parse('{"name": "a\\tb\\nc"}') == {"name": "a\tb\nc"}


@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_object_columns_refuse_other_json(value: Any) -> None:
    with pytest.raises(ValueError, match="write a JSON object"):
        BY_NAME["variables"].parse(json.dumps(value))


@given(st.text(min_size=1).filter(lambda t: not _is_json(t)))
def test_text_that_is_not_json_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not valid JSON"):
        BY_NAME["callback data"].parse(value)


def _is_json(text: str) -> bool:
    try:
        json.loads(text.strip())
    except ValueError:
        return False
    return True


subscriber_numbers = st.integers(0, 9_999_999).map(lambda n: f"916{n:07d}")


@given(subscriber_numbers, st.sampled_from([
    "+7{n}", "7{n}", "8{n}", "+7 ({a}) {b}-{c}-{d}", "8 {a} {b} {c} {d}", "tel:+7{n}", "+7\u00a0{a}\u00a0{b}\u2009{c}{d}",
    "\u200e+7{n}", "7{n}.0", "+7{n} ext 12", "+7{n} доб. 3",
]))
def test_phone_written_any_spreadsheet_way_cleans_to_one_number(national: str, pattern: str) -> None:
    cell = pattern.format(n=national, a=national[:3], b=national[3:6], c=national[6:8], d=national[8:])
    number = clean_phone(cell, "RU")
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == f"+7{national}"


@given(subscriber_numbers)
def test_numeric_cells_and_full_scientific_notation_are_the_number(national: str) -> None:
    whole = int(f"7{national}")
    assert clean_phone(float(whole), "RU").national_number == int(national)
    # Every digit shown: 7.9160000000E+10 is exact, while 7.916E+10 could be a rounding and is refused.
    assert clean_phone(f"7.{national}E+{len(national)}", "RU").national_number == int(national)


@given(subscriber_numbers.filter(lambda n: n[-5:] != "00000"))
def test_scientific_notation_that_lost_digits_is_refused(national: str) -> None:
    rounded = f"{float('7' + national):.5E}"  # what Excel shows for a number it rounded: 7.91612E+10
    with pytest.raises(ValueError, match="rounded by Excel"):
        clean_phone(rounded, "RU")


@given(subscriber_numbers, st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZабв"))
def test_letters_are_refused_never_converted(national: str, letter: str) -> None:
    with pytest.raises(ValueError):
        clean_phone(f"+7{national[:5]}{letter}{national[5:]}", "RU")


# --- a whole file through the real intake ---------------------------------------------------------

def test_ten_thousand_rows_with_every_hundredth_bad(tmp_path: Path, engine: Any) -> None:
    good = iter(phones(9_900, start=uuid.uuid4().int % 8_000_000))
    rows = [["not a phone" if i % 100 == 99 else next(good), f"Order {i} is ready", "sms", f"u-{i}", 60] for i in range(10_000)]
    path = write_xlsx(tmp_path / "ten-thousand.xlsx", ["Phone", "Message Content", "Channel", "Unique_Message_ID", "Validity Period"], rows)
    task_id = make_task_from(path)
    result = intake.fn(task_id)
    assert (result.accepted, result.rejected) == (9_900, 100)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.task_id == task_id)) == 9_900
        rejected_rows = session.scalars(select(Rejection.row).where(Rejection.task_id == task_id).order_by(Rejection.row)).all()
    assert rejected_rows == [i + 2 for i in range(10_000) if i % 100 == 99]
