"""Reads a notification-task file (.xlsx, .xls, .ods or .csv) as a header and numbered rows."""
from __future__ import annotations

import codecs
import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from python_calamine import CalamineWorkbook

from models.errors import TaskFileError
from tasks.sheet_shape import check_sheet_shape

EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"}
# The longest CSV cell (characters): a longer one refuses its row, naming the column.
MAX_CSV_CELL = 128 * 1024
_CSV_CHUNK = 1 << 20


class OversizedCell:
    """A CSV cell longer than MAX_CSV_CELL, in place of its text: validation refuses the row with it."""

    __slots__ = ("length",)

    def __init__(self, length: int):
        self.length = length

    def __str__(self) -> str:
        return f"<{self.length:,} characters>"


class OversizedRow(list):  # type: ignore[type-arg]
    """A CSV row with an OversizedCell: validation tells it by its class, one check per row."""


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
    check_sheet_shape(path)
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except Exception as exc:
        raise TaskFileError(f"task file {path.name!r} is not a readable spreadsheet ({exc}); save it again as .xlsx and retry") from exc
    # calamine starts at the first used cell; keep the Excel row numbers users see. Each row is a new
    # list already, numbered here without a Python step per row (a million-row file has a million).
    first_row = (sheet.start or (0, 0))[0] + 1
    return zip(count(first_row), sheet.iter_rows())


def csv_encoding(path: Path) -> str:
    """The CSV file's encoding: a byte-order mark says it; else UTF-8 when the whole file is valid UTF-8,
    UTF-16 when its start has the zero bytes of UTF-16 text, else cp1251 (what Russian Excel saves).

    The whole file is decoded once here, so a bad byte anywhere is refused before any row is stored.
    """
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif head[1::2].count(0) > len(head) // 4:
        encoding = "utf-16-le"
    elif head[0::2].count(0) > len(head) // 4:
        encoding = "utf-16-be"
    else:
        # cp1251 Cyrillic is never valid UTF-8, so a file whose UTF-8 held up for some non-ASCII text
        # before a bad byte is UTF-8 with a bad byte, not cp1251.
        error = _decodes(path, "utf-8")
        encoding = "utf-8" if error is None or error.after_non_ascii else "cp1251"
    if encoding != "utf-8":
        error = _decodes(path, encoding)
    if error is not None:
        raise TaskFileError(
            f"task file {path.name!r} is not readable text: {error} (read as {encoding}); "
            "save it again as CSV UTF-8 (Excel: Save As, CSV UTF-8) and retry"
        )
    return encoding


@dataclass(frozen=True)
class _DecodeError:
    where: str
    after_non_ascii: bool

    def __str__(self) -> str:
        return self.where


def _decodes(path: Path, encoding: str) -> _DecodeError | None:
    """None when the whole file decodes, else where it does not (byte, line) and whether non-ASCII text came before."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = lines = 0
    non_ascii = False
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CSV_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                where = f"byte 0x{chunk[exc.start:exc.start + 1].hex()} at byte {offset + exc.start + 1:,}"
                if not encoding.startswith("utf-16"):
                    line = lines + chunk.count(b"\n", 0, exc.start) + 1
                    where += f", line {line:,}"
                return _DecodeError(f"{where} is not valid", non_ascii or not chunk[: exc.start].isascii())
            if not chunk:
                return None
            non_ascii = non_ascii or not chunk.isascii()
            lines += chunk.count(b"\n")
            offset += len(chunk)


def _csv_rows(path: Path) -> Iterator[tuple[int, list[Any]]]:
    encoding = csv_encoding(path)
    # Cells are measured after reading: csv's own limit would stop the whole file with an error.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(newline="", encoding=encoding) as handle:
        sample = handle.read(64 * 1024)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        for number, row in enumerate(csv.reader(handle, dialect), start=1):
            if max(map(len, row), default=0) > MAX_CSV_CELL:
                row = OversizedRow(OversizedCell(len(cell)) if len(cell) > MAX_CSV_CELL else cell for cell in row)
            yield number, row
