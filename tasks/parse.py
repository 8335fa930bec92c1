"""Reads a notification-task file (.xlsx, .xls, .ods or .csv) as a header and numbered rows."""
from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from python_calamine import CalamineWorkbook

from models.errors import TaskFileError

EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"}


@dataclass
class TaskFile:
    """The header (row 1) and an iterator of (Excel row number, cell values) for the rows below it."""

    header: list[str]
    rows: Iterator[tuple[int, list[Any]]]


def read_task_file(path: str | Path) -> TaskFile:
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file {str(path)!r} does not exist: give the path of an .xlsx, .xls or .csv file")
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        rows = _excel_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path)
    else:
        raise TaskFileError(f"task file {path.name!r}: {suffix or 'no extension'} is not a task file; use .xlsx, .xls or .csv")
    try:
        first = next(rows, None)
    except TaskFileError:
        raise
    except Exception as exc:  # calamine and csv raise many types for a damaged file
        raise TaskFileError(f"task file {path.name!r} cannot be read ({exc}); save it again as .xlsx and retry") from exc
    while first is not None and not any(_filled(v) for v in first[1]):
        first = next(rows, None)
    if first is None:
        raise TaskFileError(f"task file {path.name!r} is empty: put the column names in row 1 and one message per row below")
    header = [str(v).strip() if _filled(v) else "" for v in first[1]]
    return TaskFile(header=header, rows=rows)


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _excel_rows(path: Path) -> Iterator[tuple[int, list[Any]]]:
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except Exception as exc:
        raise TaskFileError(f"task file {path.name!r} is not a readable spreadsheet ({exc}); save it again as .xlsx and retry") from exc
    # calamine starts at the first used cell; keep the Excel row numbers users see. Each row is a new
    # list already, numbered here without a Python step per row (a million-row file has a million).
    first_row = (sheet.start or (0, 0))[0] + 1
    return zip(count(first_row), sheet.iter_rows())


def _csv_rows(path: Path) -> Iterator[tuple[int, list[Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(64 * 1024)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        yield from enumerate(csv.reader(handle, dialect), start=1)
