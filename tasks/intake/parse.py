"""Reads a notification-task file (.xlsx, .xls, .ods or .csv) as a header and numbered rows."""
from __future__ import annotations

import codecs
import csv
import logging
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, count, islice
from pathlib import Path
from typing import Any

from python_calamine import CalamineWorkbook

from models.errors import TaskFileError
from tasks.intake.sheet_pieces import SheetPiece, SplitSheet, split_sheet
from tasks.intake.sheet_shape import check_sheet_shape, first_sheet

logger = logging.getLogger(__name__)

EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"}
# The longest CSV cell (characters): a longer one refuses its row, naming the column.
MAX_CSV_CELL = 128 * 1024
_CSV_CHUNK = 1 << 20
# Rows per job of a file read row by row (CSV, .xls, .ods, an unusual .xlsx); an .xlsx sheet comes in
# pieces of its XML of about as many rows (tasks.intake.sheet_pieces).
ROWS_PER_JOB = 2000

Rows = list[tuple[int, list[Any]]]
# A job of rows: read already, or a piece of a sheet read where it is checked (a worker process).
Job = Rows | SheetPiece


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
    """The header (row 1) and the rows below it, in jobs of rows in row order; `close` when done with them."""

    header: list[str]
    jobs: Iterator[Job]
    split: SplitSheet | None = None

    @property
    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        """(Excel row number, cell values) of each row below the header, read here."""
        return chain.from_iterable(map(job_rows, self.jobs))

    def close(self) -> None:
        """Remove the sheet's pieces, if it was cut into pieces."""
        if self.split is not None:
            self.split.close()

    def __enter__(self) -> TaskFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def job_rows(job: Job) -> Rows:
    """The job's rows, reading them when it is a piece of a sheet."""
    return job if isinstance(job, list) else read_piece(job)


def job_size(job: Job) -> int:
    """How many rows a job holds (a piece's rows counted, not read)."""
    return len(job) if isinstance(job, list) else job.count()


def read_piece(piece: SheetPiece) -> Rows:
    try:
        return piece.rows()
    except Exception as exc:  # calamine raises many types for damaged XML
        raise TaskFileError(
            f"task file {piece.source!r} cannot be read from row {piece.first_row:,} on ({exc}); "
            "open it in Excel, save it again as .xlsx and retry"
        ) from exc


def read_task_file(path: str | Path) -> TaskFile:
    """The task file's header and rows; close it when done (see TaskFile.close)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file {str(path)!r} does not exist: give the path of an .xlsx, .xls or .csv file")
    suffix = path.suffix.lower()
    split = None
    if suffix in EXCEL_SUFFIXES:
        split = _split(path) if suffix in (".xlsx", ".xlsm") else None
        if split is None:
            check_sheet_shape(path)
        jobs: Iterator[Job] = iter(split.pieces) if split is not None else _row_jobs(_excel_rows(path))
    elif suffix == ".csv":
        jobs = _row_jobs(_csv_rows(path))
    else:
        raise TaskFileError(f"task file {path.name!r}: {suffix or 'no extension'} is not a task file; use .xlsx, .xls or .csv")
    try:
        return _with_header(path, jobs, split)
    except BaseException:
        if split is not None:
            split.close()
        raise


def _with_header(path: Path, jobs: Iterator[Job], split: SplitSheet | None) -> TaskFile:
    """The task file with its header: the first row with a filled cell."""
    for job in jobs:
        try:
            rows = job_rows(job)
        except TaskFileError:
            raise
        except Exception as exc:  # calamine and csv raise many types for a damaged file
            raise TaskFileError(f"task file {path.name!r} cannot be read ({exc}); save it again as .xlsx and retry") from exc
        for position, (_number, values) in enumerate(rows):
            if any(_filled(v) for v in values):
                header = [str(v).strip() if _filled(v) else "" for v in values]
                rest = rows[position + 1:]
                return TaskFile(header=header, jobs=chain([rest], jobs) if rest else jobs, split=split)
    raise TaskFileError(f"task file {path.name!r} is empty: put the column names in row 1 and one message per row below")


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _row_jobs(rows: Iterator[tuple[int, list[Any]]]) -> Iterator[Job]:
    while job := list(islice(rows, ROWS_PER_JOB)):
        yield job


def _split(path: Path) -> SplitSheet | None:
    """The sheet cut into pieces, its shape checked, or None when it must be read whole (see tasks.intake.sheet_pieces):
    a damaged file is then refused by check_sheet_shape or calamine, saying what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = first_sheet(archive)
        return split_sheet(path, member) if member is not None else None
    except (zipfile.BadZipFile, EOFError, KeyError, NotImplementedError, RuntimeError):
        return None
    except OSError as exc:  # no room for the pieces, say: reading whole needs memory instead
        logger.warning("task file %r is read whole, not in pieces: %s", path.name, exc)
        return None


def _excel_rows(path: Path) -> Iterator[tuple[int, list[Any]]]:
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except Exception as exc:
        raise TaskFileError(f"task file {path.name!r} is not a readable spreadsheet ({exc}); save it again as .xlsx and retry") from exc
    # iter_rows starts at row 1 (empty rows before the first filled cell included), so its rows are
    # numbered as users see them in Excel. Each row is a new list already, numbered here without a
    # Python step per row (a million-row file has a million).
    return zip(count(1), sheet.iter_rows())


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
