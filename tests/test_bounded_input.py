"""Bounded input: a task file's reading memory follows the cells it has, and every odd cell is a row error.

The crafted spreadsheets are read in a child process capped at 1 GiB of address space, as an attacker's
file would be read by a server: without the shape check the reader aborts that process (SIGABRT) or
runs out of memory; with it, the file is refused with a message that says what to do.
"""
from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import select
from sqlmodel import Session

from models.errors import TaskFileError
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.status import Channel
from models.tables import Message, Rejection
from tasks.control.lifecycle import open_task
from tasks.intake.intake import intake
from tasks.intake.parse import MAX_CSV_CELL, read_task_file
from tasks.intake.validate import Columns, RowError, ValidRow, validate_rows
from tests.files import write_xlsx

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>'
    '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>'
)
_HEADER = '<row r="1"><c r="A1" t="inlineStr"><is><t>phone</t></is></c><c r="B1" t="inlineStr"><is><t>text</t></is></c></row>'
_ROW2 = '<row r="2"><c r="A2" t="inlineStr"><is><t>+79161234567</t></is></c><c r="B2" t="inlineStr"><is><t>hi</t></is></c></row>'


def crafted_xlsx(path: Path, sheet_data: str, dimension: str = "A1:B2") -> Path:
    """A minimal .xlsx (a couple of KB) whose only sheet holds `sheet_data`, declaring `dimension`."""
    sheet = ('<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
             f'<dimension ref="{dimension}"/><sheetData>{sheet_data}</sheetData></worksheet>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _ROOT_RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
    return path


def read_capped(path: Path) -> dict[str, Any]:
    """Read `path` as the intake does, in a child process capped at 1 GiB: its rows, or its refusal."""
    script = textwrap.dedent("""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from models.errors import TaskFileError
        from tasks.intake.parse import read_task_file
        try:
            task_file = read_task_file(sys.argv[1])
            print(json.dumps({"header": task_file.header, "rows": [[n, list(r)] for n, r in task_file.rows]}, default=str))
        except TaskFileError as exc:
            print(json.dumps({"refused": str(exc)}))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300,
                            env=os.environ.copy(), cwd=Path(__file__).resolve().parent.parent, check=False)
    assert result.returncode == 0, f"the reading process died ({result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout)


FAR_VALUE = '<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>'


@pytest.mark.parametrize(("sheet_data", "dimension"), [
    pytest.param(_HEADER + FAR_VALUE, "A1:XFD1048576", id="value-at-XFD1048576"),
    pytest.param(_HEADER + '<row r="1000000"><c r="ZZ1000000"><v>1</v></c></row>', "A1:ZZ1000000", id="value-at-ZZ1000000"),
    pytest.param(_HEADER + FAR_VALUE, "A1", id="dimension-says-A1"),
    pytest.param(_HEADER + '<row r="2">' + "<c><v>1</v></c>" * 3000 + '</row><row r="200000"><c><v>1</v></c></row>', "A1:B2",
                 id="cells-without-references"),
    pytest.param(_HEADER + '<row r="2"><c t="n" r="XFD900000"><v>1</v></c></row>', "A1:B2", id="reference-not-first"),
])
def test_spreadsheet_whose_cells_span_an_absurd_range_is_refused_without_the_memory(
        tmp_path: Path, sheet_data: str, dimension: str) -> None:
    path = crafted_xlsx(tmp_path / "absurd.xlsx", sheet_data, dimension)
    assert path.stat().st_size < 4096
    outcome = read_capped(path)
    assert "refused" in outcome, outcome
    assert "needs more than 256 MB to read" in outcome["refused"]
    assert "Delete the rows and columns after your data" in outcome["refused"]


def test_honest_spreadsheets_with_a_wrong_or_far_dimension_still_load(tmp_path: Path) -> None:
    """An openpyxl file, one formatted far out (a styled empty cell at XFD1048576) and one declaring A1 only."""
    plain = write_xlsx(tmp_path / "plain.xlsx", ["phone", "text"], [["+79161234567", "hi"], ["+79161234568", "ho"]])
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["phone", "text"])
    sheet.append(["+79161234567", "hi"])
    sheet["XFD1048576"].font = Font(bold=True)
    sheet["Z5000"].font = Font(italic=True)
    formatted = tmp_path / "formatted.xlsx"
    workbook.save(formatted)
    declared_a1 = crafted_xlsx(tmp_path / "a1.xlsx", _HEADER + _ROW2, "A1")
    for path in (plain, formatted, declared_a1):
        outcome = read_capped(path)
        assert outcome.get("header") == ["phone", "text"], (path.name, outcome)
        assert outcome["rows"][0] == [2, ["+79161234567", "hi"]], (path.name, outcome)


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    path = crafted_xlsx(tmp_path / "bomb.xlsx", _HEADER + _ROW2 + " " * (40 << 20))
    assert path.stat().st_size < 200_000
    with pytest.raises(TaskFileError, match=r"inflates from .* \(a spreadsheet inflates at most 100 times\)"):
        read_task_file(path)


def test_zip_of_many_parts_inflating_past_the_budget_is_refused(tmp_path: Path) -> None:
    path = crafted_xlsx(tmp_path / "parts.xlsx", _HEADER + _ROW2)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        for part in range(20):
            archive.writestr(f"xl/media/padding{part}.bin", b"\0" * (15 << 20))
    with pytest.raises(TaskFileError, match=r"it inflates to 314,5[0-9,]+ bytes, more than the 268,435,456 a file of its size may"):
        read_task_file(path)


def test_spreadsheet_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    path = crafted_xlsx(tmp_path / "liar.xlsx", _HEADER + _ROW2 * 50)
    data = bytearray(path.read_bytes())
    name = b"xl/worksheets/sheet1.xml"
    with zipfile.ZipFile(path) as archive:
        real = archive.getinfo(name.decode()).file_size
    # Declare half the sheet's real size, in its local header and in the central directory.
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        while start >= 0:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(name)] == name:
                struct.pack_into("<I", data, start + size_at, real // 2)
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(TaskFileError, match="does not match its declared size or checksum"):
        read_task_file(path)


def test_spreadsheet_whose_sheet_is_compressed_as_zip_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    path = crafted_xlsx(tmp_path / "deflate64.xlsx", _HEADER + _ROW2)
    data = bytearray(path.read_bytes())
    name = b"xl/worksheets/sheet1.xml"
    # Say the sheet is deflate64 (method 9), which Python's zipfile does not read, in both of its headers.
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start >= 0:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(name)] == name:
                struct.pack_into("<H", data, start + method_at, 9)
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(TaskFileError, match="compressed or encrypted in a way notiflow does not read"):
        read_task_file(path)


def _validate(path: Path) -> list[ValidRow | list[RowError]]:
    task_file = read_task_file(path)
    return list(validate_rows(task_file.rows, Columns.from_header(task_file.header), region="RU", account_zone="Europe/Moscow",
                              default_channel=Channel.SMS, default_sender="notiflow"))


def test_text_over_the_limit_is_refused_naming_row_column_and_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFLOW_MAX_TEXT_CHARS", "500")
    get_settings.cache_clear()
    try:
        path = write_xlsx(tmp_path / "long.xlsx", ["phone", "text"], [["+79161234567", "x" * 500], ["+79161234568", "y" * 1_000]])
        fits, too_long = _validate(path)
    finally:
        monkeypatch.delenv("NOTIFLOW_MAX_TEXT_CHARS")
        get_settings.cache_clear()
    assert isinstance(fits, ValidRow)
    assert isinstance(too_long, list)
    assert str(too_long[0]) == ('row 3, column "text": is 1,000 characters long; a message text may have at most 500 '
                                "(NOTIFLOW_MAX_TEXT_CHARS): shorten it")


def test_text_limit_has_a_sane_default(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "long.xlsx", ["phone", "text"], [["+79161234567", "x" * 1_000_000]])
    (errors,) = _validate(path)
    assert isinstance(errors, list) and errors[0].code == "text_too_long"
    assert "at most 20,000" in errors[0].reason


def test_csv_cell_over_128_kb_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "big-cell.csv"
    path.write_text(f"phone,text,colour\n+79161234567,hello,red\n+79161234568,{'x' * (200 * 1024)},blue\n"
                    f"+79161234569,bye,{'y' * (200 * 1024)}\n", encoding="utf-8")
    first, oversized, last = _validate(path)
    # A long cell in a column notiflow does not read harms nothing.
    assert isinstance(first, ValidRow) and isinstance(last, ValidRow) and last.row == 4
    assert isinstance(oversized, list)
    assert (oversized[0].row, oversized[0].column, oversized[0].code) == (3, "text", "cell_too_long")
    assert f"a CSV cell may hold at most {MAX_CSV_CELL:,}" in oversized[0].reason
    assert len(oversized[0].value) < 100


CYRILLIC_ROWS = [["phone", "text"], ["+79161234567", "Привет Анна! Ваш заказ готов"], ["+79161234568", "Ёлка — ёж"]]


@pytest.mark.parametrize(("encoding", "delimiter"), [
    ("cp1251", ";"), ("utf-16", "\t"), ("utf-16-le", "\t"), ("utf-16-be", ";"), ("utf-8-sig", ","), ("utf-8", ","),
])
def test_csv_in_the_encodings_excel_saves_is_read(tmp_path: Path, encoding: str, delimiter: str) -> None:
    """Russian Excel saves CSV in cp1251 and "Unicode text" in UTF-16 (with a byte-order mark; some tools without)."""
    path = tmp_path / f"{encoding}.csv"
    path.write_bytes("".join(delimiter.join(row) + "\r\n" for row in CYRILLIC_ROWS).encode(encoding))
    task_file = read_task_file(path)
    assert task_file.header == ["phone", "text"]
    assert [r for _, r in task_file.rows] == CYRILLIC_ROWS[1:]


def _open_task(path: Path) -> int:
    return open_task.fn(NotificationTaskParams(task_file=str(path), windows=["00:00-24:00"]), str(uuid.uuid4()))


def _stored(engine: Any, task_id: int) -> tuple[list[Any], list[Any]]:
    with Session(engine) as session:
        messages = session.execute(select(Message.row, Message.text).where(Message.task_id == task_id)).all()
        rejections = session.execute(select(Rejection.row, Rejection.column, Rejection.code, Rejection.value, Rejection.reason)
                                     .where(Rejection.task_id == task_id)).all()
    return list(messages), list(rejections)


def test_bad_byte_past_the_first_chunk_is_refused_before_anything_is_stored(tmp_path: Path, engine: Any) -> None:
    lines = ["phone,text"] + [f"+7916{i:07d},Привет {i}, ваш заказ готов" for i in range(40_000)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    assert len(data) > 1_500_000
    path = tmp_path / "bad-byte.csv"
    at = data.index(b"\n", 1_400_000) + 1
    path.write_bytes(data[:at] + b"\xff" + data[at:])
    task_id = _open_task(path)
    line = data.count(b"\n", 0, at) + 1
    with pytest.raises(TaskFileError, match=rf"byte 0xff at byte {at + 1:,}, line {line:,} is not valid \(read as utf-8\); "
                                            "save it again as CSV UTF-8"):
        intake.fn(task_id)
    assert _stored(engine, task_id) == ([], [])


def test_nul_and_control_characters_are_refused_with_row_and_column(tmp_path: Path, engine: Any) -> None:
    """PostgreSQL refuses NUL in text: such a row is a rejection (quoting the cell escaped), the others are stored."""
    path = tmp_path / "controls.csv"
    path.write_text("phone,text,external id\n+79161234567,ok,a\n+79161234568,bad\x00text,b\n+79161234569,esc\x1bape,c\n"
                    "+79161234570,\"two\tcolumns\nand lines\",d\n+79161234571,fine,e\x07\n", encoding="utf-8")
    task_id = _open_task(path)
    result = intake.fn(task_id)
    assert (result.accepted, result.rejected) == (2, 3)
    messages, rejections = _stored(engine, task_id)
    assert sorted(messages) == [(2, "ok"), (5, "two\tcolumns\nand lines")]
    assert sorted(rejections) == [
        (3, "text", "control_character", "bad\\x00text",
         "holds the control character U+0000 at character 4; remove it (only tabs and line breaks may be in a text)"),
        (4, "text", "control_character", "esc\\x1bape",
         "holds the control character U+001B at character 4; remove it (only tabs and line breaks may be in a text)"),
        (6, "external id", "control_character", "e\\x07",
         "holds the control character U+0007 at character 2; remove it (only tabs and line breaks may be in a text)"),
    ]


@pytest.mark.parametrize("reference", ["B5000000", "B99999999", "AAAA10000"])
def test_references_past_excels_last_row_or_column_are_measured_too(tmp_path: Path, reference: str) -> None:
    """The reader takes rows past 1,048,576 and columns past XFD: they count like any other (two columns of
    five million rows are 320 MB, past a tiny file's 256 MB)."""
    row = "".join(ch for ch in reference if ch.isdigit())
    path = crafted_xlsx(tmp_path / "past.xlsx", _HEADER + f'<row r="{row}"><c r="{reference}"><v>1</v></c></row>')
    outcome = read_capped(path)
    assert "needs more than 256 MB to read" in outcome.get("refused", ""), outcome


def test_a_wide_sheet_within_the_budget_loads(tmp_path: Path) -> None:
    """A value in column AAAA (past XFD) of row 1 is a grid of one row: no reason to refuse it."""
    path = crafted_xlsx(tmp_path / "wide.xlsx", _HEADER.replace("</row>", '<c r="AAAA1"><v>1</v></c></row>') + _ROW2)
    outcome = read_capped(path)
    assert outcome.get("header", [])[:2] == ["phone", "text"], outcome


_ODS_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
    'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>'
)


def crafted_ods(path: Path, rows: str) -> Path:
    content = ('<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
               'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
               f'office:version="1.2"><office:body><office:spreadsheet><table:table table:name="Sheet1">{rows}</table:table>'
               "</office:spreadsheet></office:body></office:document-content>")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("META-INF/manifest.xml", _ODS_MANIFEST, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
    return path


def _ods_cells(*texts: str) -> str:
    return "<table:table-row>" + "".join(
        f'<table:table-cell office:value-type="string"><text:p>{t}</text:p></table:table-cell>' for t in texts) + "</table:table-row>"


def test_ods_that_repeats_a_cell_millions_of_times_is_refused_and_an_honest_one_loads(tmp_path: Path) -> None:
    """An .ods (not scanned here) is measured in the capped child: repeated cells are real cells to the reader."""
    honest = crafted_ods(tmp_path / "honest.ods", _ods_cells("phone", "text") + _ods_cells("+79161234567", "hi"))
    assert read_capped(honest)["rows"] == [[2, ["+79161234567", "hi"]]]
    repeated = crafted_ods(tmp_path / "repeated.ods", _ods_cells("phone", "text") + (
        '<table:table-row table:number-rows-repeated="20000"><table:table-cell table:number-columns-repeated="3000" '
        'office:value-type="float" office:value="1"/></table:table-row>'))
    assert repeated.stat().st_size < 2048
    assert "needs more than 256 MB to read" in read_capped(repeated).get("refused", "")


def test_json_and_free_text_cells_have_a_limit(tmp_path: Path) -> None:
    """Cells under the CSV cell limit in characters can still be too many bytes for what is stored."""
    path = tmp_path / "big.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "text", "variables", "notes"])
        writer.writerow(["+79161234567", "hi {name}", json.dumps({"name": "я" * 70_000}, ensure_ascii=False), "ok"])
        writer.writerow(["+79161234568", "hi", "", "ж" * 70_000])
    json_row, notes_row = _validate(path)
    assert isinstance(json_row, list) and isinstance(notes_row, list)
    assert str(json_row[0]) == 'row 2, column "variables": is 140012 bytes long (UTF-8); at most 131072 are allowed'
    assert str(notes_row[0]) == 'row 3, column "notes": is 140000 bytes long (UTF-8); at most 131072 are allowed'
