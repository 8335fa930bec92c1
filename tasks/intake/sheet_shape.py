"""Refuses a spreadsheet that would need absurd memory to read, before the reader loads it.

calamine (the Excel reader) builds one dense grid from the first to the last cell holding a value, and
aborts the whole process when it cannot allocate it: a 1.8 KB .xlsx with values in A1 and XFD1048576
asked for 512 GiB (SIGABRT, which nothing can catch). A sheet's `<dimension>` cannot be trusted for
this either way (some tools declare A1 only, some a range far past the data), so the grid is bounded
from the cells the sheet's XML really holds, streamed out of the zip with cheap byte counts; when
that bound is too loose (a stray formatted cell far out, unusual XML, .xls/.xlsb/.ods), calamine
measures the sheet in a child process whose memory is capped, where running out harms nothing.
"""
from __future__ import annotations

import posixpath
import re
import resource
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from models.errors import TaskFileError

# What reading a sheet costs calamine: each cell of the dense grid, and each value cell while it is read
# (measured: a 1,000,000-row, 7-column openpyxl file of 25 MB peaked at 553 MB; this gives 544 MB).
GRID_CELL_BYTES = 32
VALUE_CELL_BYTES = 64
# The most a file may make the reader allocate: a few hundred MB for a file of a few MB, more for a
# large file in proportion (honest sheets, dense or with a wide header over sparse rows, need 20–140×).
MEMORY_FLOOR = 256 << 20
MEMORY_PER_FILE_BYTE = 200
# A zip member that inflates more than this (and by more than the slack) is a zip bomb, not a
# spreadsheet: sheets inflate 10–20×; the slack lets a bloated styles part (thousands of identical
# cell styles, common in old workbooks) through.
MAX_INFLATION = 100
_SLACK = 16 << 20
# Virtual memory a Python process with calamine loaded takes before reading anything, 16 MB measured
# (the cap of the measuring child is this plus the budget).
_CHILD_BASE = 64 << 20
_CHUNK = 1 << 22
_CHILD_SECONDS = 600

# A value cell takes at least this many bytes of XML (`<c r="A1"><v>1</v></c>` is 21).
_MIN_CELL_XML = 16
# Any cell tag the searches below might misread: bare or with an attribute before `r`, a lower-case
# or three-letter reference, or a namespace prefix. calamine reads them all, so a sheet with one is
# measured in the child instead.
_ODD_CELLS = (re.compile(rb'<c(?:[\t\n\r/>]| (?!r="[A-Z]{1,2}[0-9]))'), re.compile(rb':c[\s/>]'))
# Any of the odd cells, a two-letter column or a seven-digit row, in one search.
_UNUSUAL = re.compile(rb'<c(?:[\t\n\r/>]| (?!r="[A-Z]{1,2}[0-9])| r="(?:[A-Z][A-Z]|[A-Z][0-9]{7}))')
# The widest column and the longest row number the cell references reach, searched widest first; most
# sheets have no two-letter column, which one search tells.
_TWO_LETTERS = re.compile(rb'<c r="[A-Z][A-Z][0-9]')
_COLUMNS = tuple((re.compile(rb'<c r="%s[A-Z][0-9]' % letters), columns)
                 for letters, columns in ((b"[D-Z]", 702), (b"C", 104), (b"B", 78), (b"A", 52)))
# calamine takes rows past Excel's 1,048,576 too: eight digits or more are measured in the child.
# Most sheets have no seven-digit row, which one search tells.
_SEVEN_DIGITS = re.compile(rb'<c r="[A-Z]{1,2}[0-9]{7}')
_LONG_ROWS = tuple((re.compile(rb'<c r="[A-Z]{1,2}' + digits), rows) for digits, rows in (
    (rb"[0-9]{8}", 2**32), (rb'[2-9][0-9]{6}"', 9_999_999), (rb'1[0-9]{6}"', 1_999_999)))
_ROWS = tuple((re.compile(rb'<c r="[A-Z]{1,2}[0-9]{%d}"' % d), 10**d - 1) for d in range(6, 1, -1))
_MAIN_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


@dataclass
class _Bound:
    """An upper bound of what the first sheet holds, from its XML: cells, and the grid's columns and rows."""

    cells: int = 0
    columns: int = 26
    rows: int = 9
    regular: bool = True

    def memory(self) -> int:
        return GRID_CELL_BYTES * self.columns * self.rows + VALUE_CELL_BYTES * self.cells


def budget(file_size: int) -> int:
    """The most reading a file of `file_size` bytes may allocate."""
    return max(MEMORY_FLOOR, MEMORY_PER_FILE_BYTE * file_size)


def check_sheet_shape(path: Path) -> None:
    """Raise TaskFileError when reading the first sheet of `path` would need more memory than its size warrants."""
    allowed = budget(path.stat().st_size)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            archive = None  # not a zip: whatever it is, the child reads it first
        if archive is not None:
            with archive:
                _refuse_zip_bomb(path, archive, allowed)
                member = first_sheet(archive)
                bound = _scan_sheet(path, archive, member) if member is not None else None
            if bound is not None and bound.regular and bound.memory() <= allowed:
                return
    _measure_in_child(path, allowed)


class SheetShape:
    """check_sheet_shape for a reader that streams the sheet's XML itself (tasks.intake.sheet_pieces): it feeds
    each chunk here as it reads, and calls `check` before any cell is read."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, member: str):
        self.path, self.allowed = path, budget(path.stat().st_size)
        _refuse_zip_bomb(path, archive, self.allowed)
        self._scan = _Scan(_Bound(cells=archive.getinfo(member).file_size // _MIN_CELL_XML))

    def feed(self, chunk: bytes) -> None:
        self._scan.feed(chunk)

    def check(self) -> None:
        """Raise TaskFileError when the sheet fed would need more memory to read than the file's size warrants."""
        bound = self._scan.finish()
        if not (bound.regular and bound.memory() <= self.allowed):
            _measure_in_child(self.path, self.allowed)


def _refuse_zip_bomb(path: Path, archive: zipfile.ZipFile, allowed: int) -> None:
    infos = archive.infolist()
    for info in infos:
        if info.file_size > MAX_INFLATION * info.compress_size + _SLACK:
            raise TaskFileError(
                f"task file {path.name!r} is not a usable spreadsheet: its part {info.filename} inflates from "
                f"{info.compress_size:,} to {info.file_size:,} bytes (a spreadsheet inflates at most {MAX_INFLATION} times); "
                "open it in Excel and save it again as .xlsx"
            )
    inflated = sum(info.file_size for info in infos)
    if inflated > allowed:
        raise TaskFileError(
            f"task file {path.name!r} is not a usable spreadsheet: it inflates to {inflated:,} bytes, more than the "
            f"{allowed:,} a file of its size may; open it in Excel and save it again as .xlsx"
        )


def first_sheet(archive: zipfile.ZipFile) -> str | None:
    """The zip member of the workbook's first sheet (the one the reader reads)."""
    try:
        workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
        relations = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    # Deflate64 or an encrypted member (NotImplementedError, RuntimeError): left to the capped child's reader.
    except (KeyError, ElementTree.ParseError, zipfile.BadZipFile, NotImplementedError, RuntimeError):
        return None
    sheet = workbook.find(f"{_MAIN_NS}sheets/{_MAIN_NS}sheet")
    if sheet is None:
        return None
    wanted = sheet.get(f"{_REL_NS}id")
    for relation in relations.iter(f"{_PKG_REL_NS}Relationship"):
        if relation.get("Id") == wanted:
            target = relation.get("Target", "")
            member = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
            # Anything but a worksheet (a chart sheet first) is left to the child to read.
            return member if member in archive.NameToInfo and member.startswith("xl/worksheets/") else None
    return None


def _scan_sheet(path: Path, archive: zipfile.ZipFile, member: str) -> _Bound:
    """Stream the sheet's XML once and bound its widest column and longest row number (its cells are
    bounded by its size).

    Reading the member to its end also proves its declared size and checksum: zipfile stops at the
    declared size and fails on a wrong CRC, so a part that lies about its size is refused.
    """
    scan = _Scan(_Bound(cells=archive.getinfo(member).file_size // _MIN_CELL_XML))
    try:
        with archive.open(member) as stream:
            while chunk := stream.read(_CHUNK):
                scan.feed(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise TaskFileError(
            f"task file {path.name!r} is damaged: its sheet {member} does not match its declared size or checksum ({exc}); "
            "open it in Excel and save it again as .xlsx"
        ) from exc
    except (NotImplementedError, RuntimeError) as exc:  # deflate64, or a password on the sheet
        raise TaskFileError(
            f"task file {path.name!r} cannot be read: its sheet {member} is compressed or encrypted in a way notiflow "
            f"does not read ({exc}); open it in Excel and save it again as .xlsx without a password"
        ) from exc
    return scan.finish()


class _Scan:
    """The searches of one sheet's XML, a window at a time; each search that cannot raise the bound any
    more is dropped, so most windows see five searches."""

    def __init__(self, bound: _Bound):
        self.bound = bound
        self.columns, self.long_rows, self.rows = list(_COLUMNS), list(_LONG_ROWS), list(_ROWS)
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        """Search the sheet's XML up to the last tag begun in `chunk`; a tag cut by the chunk's end is
        searched whole with the next chunk."""
        window = self._tail + chunk
        cut = window.rfind(b"<", max(0, len(window) - 64))
        end = cut if cut > 0 else len(window)
        self.search(window, end)
        self._tail = window[end:]

    def finish(self) -> _Bound:
        """The bound, once the last chunk was fed."""
        self.search(self._tail, len(self._tail))
        self._tail = b""
        return self.bound

    def search(self, window: bytes, end: int) -> None:
        bound = self.bound
        if bound.regular and not _UNUSUAL.search(window, 0, end) and not _ODD_CELLS[1].search(window, 0, end):
            # Nearly every window: regular cells of one-letter columns and rows below 1,000,000, found in
            # one pass; only the row bound may still grow.
            if self.rows and bound.rows < 1_000_000:
                bound.rows = max(bound.rows, _widest(self.rows, window, end))
            return
        bound.regular = bound.regular and not any(odd.search(window, 0, end) for odd in _ODD_CELLS)
        if self.columns and _TWO_LETTERS.search(window, 0, end):
            bound.columns = max(bound.columns, _widest(self.columns, window, end))
        if self.long_rows and _SEVEN_DIGITS.search(window, 0, end):
            bound.rows = max(bound.rows, _widest(self.long_rows, window, end))
        if self.rows and bound.rows < 1_000_000:
            bound.rows = max(bound.rows, _widest(self.rows, window, end))


def _widest(searches: list[tuple[re.Pattern[bytes], int]], window: bytes, end: int) -> int:
    """The bound of the first (widest) search that finds something in `window`, 0 if none does; that
    search and the narrower ones are dropped, since they cannot raise the bound any more."""
    for position, (pattern, widest) in enumerate(searches):
        if pattern.search(window, 0, end):
            del searches[position:]
            return widest
    return 0


# The child reads the sheet as the intake would and prints the grid it built; it has no other work.
_MEASURE = (
    "import sys; from python_calamine import CalamineWorkbook; "
    "s = CalamineWorkbook.from_path(sys.argv[1]).get_sheet_by_index(0); print(s.height, s.width)"
)


def _measure_in_child(path: Path, allowed: int) -> None:
    """Read the sheet in a child process capped at the budget: the grid it needs, or the refusal when it needs more."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _CHILD_BASE + allowed if hard == resource.RLIM_INFINITY else min(hard, _CHILD_BASE + allowed)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        result = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                                preexec_fn=cap, timeout=_CHILD_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise TaskFileError(
            f"task file {path.name!r} could not be read in {_CHILD_SECONDS} s; save it again as .xlsx with only your data and retry"
        ) from None
    if result.returncode == 0:
        return
    if "MemoryError" in result.stderr or "memory allocation" in result.stderr or result.returncode < 0:
        raise TaskFileError(
            f"task file {path.name!r} needs more than {allowed >> 20:,} MB to read: its cells spread over a range far "
            "larger than the data they hold (a value far to the right or far down). Delete the rows and columns "
            "after your data (select them, Delete), save it again and retry"
        )
    # Any other failure is a damaged file: the reader itself says so in this process.
