"""Variables in texts: {name} filled as text, {{ }} literal, a missing variable names itself."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.errors import CompositionError
from models.status import Channel
from tasks.compose.compose import fill
from tasks.intake.validate import Columns, RowError, ValidRow, validate_rows


def test_placeholders_are_filled_from_variables() -> None:
    assert fill("Hello {name}, order {order} is ready", {"name": "Anna", "order": 42}) == "Hello Anna, order 42 is ready"


def test_double_braces_are_literal() -> None:
    assert fill("{{not a variable}} but {x}", {"x": "1"}) == "{not a variable} but 1"


def test_values_are_inserted_as_text_never_evaluated() -> None:
    assert fill("{a}", {"a": "{b} {__class__}"}) == "{b} {__class__}"


@pytest.mark.parametrize(("text", "message"), [
    ("Hi {name}", 'variables has no "name"'), ("Hi {0}", "not a variable"), ("Hi {a.b}", "not a variable"),
    ("Hi {a:>10}", "not a variable"), ("Hi {", "lone brace"), ("Hi }", "lone brace"),
])
def test_bad_placeholders_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(CompositionError, match=message):
        fill(text, {"a": 1})


@given(st.text().filter(lambda t: "{" not in t and "}" not in t))
def test_text_without_braces_is_unchanged(text: str) -> None:
    assert fill(text, None) == text


def test_row_with_a_missing_variable_is_rejected_naming_it() -> None:
    columns = Columns.from_header(["phone", "text", "variables"])
    rows = [(2, ["+79161234567", "Hi {name}", '{"city": "Omsk"}']), (3, ["+79161234568", "Hi {name}", '{"name": "Ivan"}'])]
    missing, filled = list(validate_rows(rows, columns, region="RU", account_zone="Europe/Moscow",
                                         default_channel=Channel.SMS, default_sender="notiflow"))
    assert isinstance(missing, list) and isinstance(missing[0], RowError)
    assert (missing[0].column, missing[0].code) == ("variables", "missing_variable")
    assert str(missing[0]) == 'row 2, column "variables": the text uses {name} but variables has no "name"'
    assert isinstance(filled, ValidRow) and filled.text == "Hi Ivan"
