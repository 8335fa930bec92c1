"""Reads an .xlsx sheet in pieces of rows, so a large task file is never held whole in memory.

calamine (the Excel reader) builds the whole sheet in memory before giving its first row: 953 MiB
for a million-row task file, read on one core while nothing else can start. Here the sheet's XML is
streamed out of the zip once and cut between rows into pieces of about a megabyte, each written as a
sheet of its own into a private workbook of pieces, beside the original's cell styles (which tell
dates from numbers), its 1904 date system flag and its shared-strings table (the texts of Excel's
cells). Whoever checks a piece's rows reads that one sheet with calamine: the intake's worker
processes for a large file, each opening the workbook once, so the reading is spread over the cores
too and no process holds more than a few pieces.

The pieces are the original XML, cut, never rewritten: each reads as calamine reads the whole sheet.
A sheet whose XML this does not follow (a namespace prefix, rows without their numbers) is read
whole, as before; so are .xls, .xlsb and .ods files.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import IO, Any

from python_calamine import CalamineWorkbook

from tasks.intake.sheet_shape import SheetShape

# About this much sheet XML per piece: ~1,700 rows of a 17-column task file, read in ~15 ms.
PIECE_BYTES = 1 << 20
_CHUNK = 1 << 20

_SHEET_START = re.compile(rb"<worksheet\b[^>]*>")
_SHEET_DATA = re.compile(rb"<sheetData\s*(/?)>")
# A row tag without its number: calamine numbers such rows by their place, which a piece does not know.
_UNNUMBERED_ROW = re.compile(rb'<row(?![^>]*\sr=")[\s/>]')
_FIRST_ROW = re.compile(rb'<row\b[^>]*?\sr="([0-9]+)"')
_SHARED_INDEX = re.compile(rb' t="s"[^>]*>\s*<v>\s*([0-9]+)')
_ITEM_END = re.compile(rb"</si>|<si\s*/>")
_DATE_1904 = re.compile(rb'<workbookPr\b[^>]*\bdate1904="(?:1|true)"')
_XML = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
_PART = "application/vnd.openxmlformats-officedocument.spreadsheetml."
_RELATION = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"


@dataclass(frozen=True)
class SheetPiece:
    """Whole rows of a task file's sheet: one sheet of the workbook of pieces, read where they are checked."""

    workbook: str
    index: int
    # How many rows it holds and the number of its first, found when it was cut, and the task file's name.
    row_count: int
    first_row: int
    source: str

    def rows(self) -> list[tuple[int, list[Any]]]:
        """(Excel row number, cell values from column A) of each row of the piece, empty rows between included."""
        sheet = _open(self.workbook).get_sheet_by_index(self.index)
        if sheet.height == 0:
            return []
        # to_python gives the rows from the first filled cell (iter_rows starts at row 1: a million empty
        # rows before a late piece).
        first_row, first_column = sheet.start or (0, 0)
        rows = sheet.to_python(skip_empty_area=True)
        if first_column:  # keep cells under their header's column, whatever the piece's first filled column
            padding = [""] * first_column
            rows = [padding + row for row in rows]
        return list(zip(count(first_row + 1), rows))

    def count(self) -> int:
        return self.row_count


@dataclass
class SplitSheet:
    """A sheet cut into pieces, and the private folder holding their workbook until `close`."""

    folder: Path
    pieces: list[SheetPiece] = field(default_factory=list)

    def close(self) -> None:
        forget_pieces()
        shutil.rmtree(self.folder, ignore_errors=True)


def split_sheet(path: Path, member: str) -> SplitSheet | None:
    """The sheet `member` of the .xlsx at `path` cut into pieces, or None when its XML is not the usual
    kind (the caller reads it whole then).

    Raises TaskFileError for a sheet whose shape would make reading it need absurd memory: its XML is
    checked as it streams past (tasks.intake.sheet_shape), before any piece is read.
    """
    with zipfile.ZipFile(path) as original:
        shape = SheetShape(path, original, member)
        relations = _workbook_relations(original)
        with original.open(member) as stream:
            buffer = b""
            while (found := _SHEET_DATA.search(buffer)) is None and (chunk := stream.read(_CHUNK)):
                shape.feed(chunk)
                buffer += chunk
            start = _SHEET_START.search(buffer)
            if found is None or start is None or start.end() > found.start():
                return None
            buffer = buffer[found.end():]
            if not found.group(1) and _UNNUMBERED_ROW.search(buffer[:PIECE_BYTES]):
                return None
            # The folder is the user's alone (mkdtemp): the pieces are the customer's data.
            split = SplitSheet(Path(tempfile.mkdtemp(prefix="notiflow-pieces-")))
            try:
                rows = iter(()) if found.group(1) else _cut(buffer, stream, shape)  # <sheetData/>: no rows
                _write_pieces(split, original, relations, start.group(0), rows)
                shape.check()
            except BaseException:
                split.close()
                raise
    return split


def _write_pieces(split: SplitSheet, original: zipfile.ZipFile, relations: dict[str, str], head: bytes,
                  rows: Iterator[bytes]) -> None:
    source = Path(str(original.filename)).name
    shared = relations.get("sharedStrings") if relations.get("sharedStrings") in original.NameToInfo else None
    styles = relations.get("styles")
    common = _Common(
        styles=original.read(styles) if styles in original.NameToInfo else
        _XML + b'<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"/>',
        date_1904=_DATE_1904.search(original.read("xl/workbook.xml")) is not None,
    )
    workbook = str(split.folder / "pieces.xlsx")
    # Stored, not deflated: the workbook lives as long as the intake, and compressing it would take
    # this process (the one that stores every row) longer than reading it takes the workers.
    with zipfile.ZipFile(workbook, "w", zipfile.ZIP_STORED, allowZip64=True) as pieces:
        for xml in rows:
            index = len(split.pieces)
            pieces.writestr(f"xl/worksheets/piece{index}.xml", _sheet(head, xml))
            first = _FIRST_ROW.search(xml)
            piece = SheetPiece(workbook, index, xml.count(b"<row"), int(first.group(1)) if first else 0, source)
            if index == 0 and shared is not None:
                # The header is read from the first piece by the process that cuts the sheet, which checks no
                # rows itself: it gets a workbook of its own with only the texts it needs (all of a large
                # table would cost it seconds and hundreds of megabytes).
                first_book = str(split.folder / "first.xlsx")
                with zipfile.ZipFile(first_book, "w", zipfile.ZIP_STORED) as book:
                    book.writestr("xl/worksheets/piece0.xml", _sheet(head, xml))
                    book.writestr("xl/sharedStrings.xml", _first_items(original, shared, _needed_items(xml)))
                    common.write(book, 1, shared=True)
                piece = dataclasses.replace(piece, workbook=first_book)
            split.pieces.append(piece)
        if shared is not None:
            with original.open(shared) as table, pieces.open("xl/sharedStrings.xml", "w", force_zip64=True) as target:
                shutil.copyfileobj(table, target, _CHUNK)
        common.write(pieces, len(split.pieces), shared=shared is not None)


def _sheet(head: bytes, xml: bytes) -> bytes:
    return b"".join((_XML, head, b"<sheetData>", xml, b"</sheetData></worksheet>"))


def _needed_items(xml: bytes) -> int:
    """How many items of the shared-strings table the rows' XML refers to (the highest index, plus one)."""
    return max(map(int, _SHARED_INDEX.findall(xml)), default=-1) + 1


def _first_items(original: zipfile.ZipFile, member: str, needed: int) -> bytes:
    """The shared-strings table with only its first `needed` items (or all it has)."""
    buffer, found, searched = b"", 0, 0
    with original.open(member) as stream:
        while chunk := stream.read(_CHUNK):
            buffer += chunk
            # From the end of the last item found: an item cut by the chunk's end is found whole now.
            for item in _ITEM_END.finditer(buffer, searched):
                searched = item.end()
                found += 1
                if found >= needed:
                    table = buffer[:item.end()]
                    return table + b"</sst>" if needed else table[:table.find(b"<si")] + b"</sst>"
    return buffer


def _cut(buffer: bytes, stream: IO[bytes], shape: SheetShape) -> Iterator[bytes]:
    """The rows' XML after <sheetData> in pieces of whole rows of about PIECE_BYTES."""
    while True:
        chunk = stream.read(_CHUNK)
        shape.feed(chunk)
        buffer += chunk
        while len(buffer) >= PIECE_BYTES:
            # Up to the last row end before PIECE_BYTES, or past it for a longer row.
            cut = buffer.rfind(b"</row>", 0, PIECE_BYTES)
            if cut < 0:
                cut = buffer.find(b"</row>", PIECE_BYTES)
                if cut < 0:
                    break
            cut += len(b"</row>")
            yield buffer[:cut]
            buffer = buffer[cut:]
        if not chunk:
            break
    end = buffer.rfind(b"</sheetData>")
    rest = buffer[:end] if end >= 0 else buffer
    if rest.strip():
        yield rest


@dataclass(frozen=True)
class _Common:
    """What every workbook of pieces takes from the original: its cell styles and its date system."""

    styles: bytes
    date_1904: bool

    def write(self, book: zipfile.ZipFile, sheets: int, *, shared: bool) -> None:
        """The workbook's own parts, for `sheets` pieces written as xl/worksheets/piece<i>.xml."""
        book.writestr("xl/styles.xml", self.styles)
        names = range(sheets)
        book.writestr("[Content_Types].xml", b"".join((
            _XML, b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            b'<Default Extension="xml" ContentType="application/xml"/>',
            f'<Override PartName="/xl/workbook.xml" ContentType="{_PART}sheet.main+xml"/>'.encode(),
            f'<Override PartName="/xl/styles.xml" ContentType="{_PART}styles+xml"/>'.encode(),
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_PART}sharedStrings+xml"/>'.encode() if shared else b"",
            "".join(f'<Override PartName="/xl/worksheets/piece{i}.xml" ContentType="{_PART}worksheet+xml"/>' for i in names).encode(),
            b"</Types>")))
        book.writestr("_rels/.rels", _XML + (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_RELATION}officeDocument" Target="xl/workbook.xml"/></Relationships>').encode())
        book.writestr("xl/workbook.xml", _XML + (
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            f'xmlns:r="{_RELATION.rstrip("/")}">' + ('<workbookPr date1904="1"/>' if self.date_1904 else "") + "<sheets>"
            + "".join(f'<sheet name="piece{i}" sheetId="{i + 1}" r:id="piece{i}"/>' for i in names) + "</sheets></workbook>").encode())
        book.writestr("xl/_rels/workbook.xml.rels", _XML + (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="styles" Type="{_RELATION}styles" Target="styles.xml"/>'
            + (f'<Relationship Id="shared" Type="{_RELATION}sharedStrings" Target="sharedStrings.xml"/>' if shared else "")
            + "".join(f'<Relationship Id="piece{i}" Type="{_RELATION}worksheet" Target="worksheets/piece{i}.xml"/>' for i in names)
            + "</Relationships>").encode())


def _workbook_relations(archive: zipfile.ZipFile) -> dict[str, str]:
    """The workbook's related parts by kind (styles, sharedStrings, …) as zip member names."""
    try:
        xml = archive.read("xl/_rels/workbook.xml.rels")
    except KeyError:
        return {}
    relations: dict[str, str] = {}
    for match in re.finditer(rb"<Relationship\b[^>]*>", xml):
        tag = match.group(0)
        kind = re.search(rb'\bType="[^"]*/([A-Za-z]+)"', tag)
        target = re.search(rb'\bTarget="([^"]*)"', tag)
        if kind and target:
            name = target.group(1).decode()
            member = name.lstrip("/") if name.startswith("/") else posixpath.normpath(posixpath.join("xl", name))
            relations.setdefault(kind.group(1).decode(), member)
    return relations


@lru_cache(maxsize=1)
def _open(workbook: str) -> CalamineWorkbook:
    """The workbook of pieces, opened once per process: calamine reads its shared-strings table then."""
    return CalamineWorkbook.from_path(workbook)


def forget_pieces() -> None:
    """Close the workbook of pieces this process opened (it reads no more of them)."""
    _open.cache_clear()
