"""Reading task files: Excel and CSV, and whole-file refusals with a clear message."""
from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import TaskFileError
from tasks.intake.parse import read_task_file
from tests.files import write_xlsx


def test_xlsx_rows_keep_their_excel_row_numbers(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "t.xlsx", ["phone", "text"], [["+79161234567", "a"], ["+79161234568", "b"]])
    task_file = read_task_file(path)
    assert task_file.header == ["phone", "text"]
    assert [n for n, _ in task_file.rows] == [2, 3]


def test_csv_with_semicolons_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("phone;text\n+79161234567;hello\n", encoding="utf-8")
    task_file = read_task_file(path)
    assert task_file.header == ["phone", "text"]
    assert list(task_file.rows) == [(2, ["+79161234567", "hello"])]


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "empty.xlsx", [], [])
    with pytest.raises(TaskFileError, match="is empty"):
        read_task_file(path)


def test_not_a_spreadsheet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    path.write_text("this is not a spreadsheet")
    with pytest.raises(TaskFileError, match="not a readable spreadsheet"):
        read_task_file(path)


def test_unsupported_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.pdf"
    path.write_text("x")
    with pytest.raises(TaskFileError, match=".pdf is not a task file"):
        read_task_file(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="does not exist"):
        read_task_file(tmp_path / "nope.xlsx")
