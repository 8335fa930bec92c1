"""An .xlsx sheet read in pieces of rows gives what calamine gives reading it whole: the same values in
the same rows and columns, for the XML Excel writes (shared strings, rich text, date styles, the 1904
date system, namespaced row attributes, gaps between rows) as for openpyxl's."""
from __future__ import annotations

import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from python_calamine import CalamineWorkbook

import bench.ingest as ingest_bench
import tasks.intake.sheet_pieces as sheet_pieces
from models.errors import TaskFileError
from tasks.intake.parse import job_rows, read_task_file
from tasks.intake.sheet_pieces import SheetPiece
from tests.files import with_shared_strings, write_xlsx

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"

SHARED = [
    "phone", "text", "send at", "force send",
    "Hello &amp; welcome, &lt;b&gt;{name}&lt;/b&gt;",
    None,  # an empty item, <si/>
]
# Rows of Excel's own XML: cells in the shared-strings table and inline, rich text with a phonetic run,
# a date style (s="1", number format 14), booleans, a formula's cached text, attributes in any order,
# a self-closing empty row, gaps between row numbers, nothing in column A.
SHEET_ROWS = """
<row r="1" spans="2:5" x14ac:dyDescent="0.25"><c r="B1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c><c r="D1" t="s"><v>2</v></c><c r="E1" t="s"><v>3</v></c></row>
<row r="2" spans="2:5" x14ac:dyDescent="0.25"><c r="B2"><v>79161234567</v></c><c r="C2" t="s"><v>4</v></c><c r="D2" s="1"><v>46000.5</v></c><c r="E2" t="b"><v>1</v></c></row>
<row r="3" x14ac:dyDescent="0.25"><c t="s" r="B3" s="0"><v>4</v></c><c r="C3" s="0" t="s"><v>5</v></c><c r="E3" t="str"><f>"no"</f><v>no</v></c></row>
<row r="4"/>
<row r="7" ht="30" customHeight="1"><c r="B7" t="inlineStr"><is><t xml:space="preserve">  +7 916 000-00-07</t></is></c><c r="C7" t="s"><v>6</v></c></row>
<row r="40"><c r="B40" t="s"><v>7</v></c><c r="D40" s="1"><v>45658</v></c><c r="E40"><v>0</v></c></row>
"""
RICH = ('<si><r><rPr><b/></rPr><t xml:space="preserve">Ваш заказ </t></r><r><t xml:space="preserve">готов 📦</t></r>'
        '<rPh sb="0" eb="1"><t>ignored</t></rPh></si>')


def excel_file(path: Path, *, date_1904: bool = False, rows: str = SHEET_ROWS) -> Path:
    flag = ' date1904="1"' if date_1904 else ""
    items = "".join("<si/>" if text is None else f"<si><t>{text}</t></si>" for text in SHARED)
    items += RICH + "<si><t>8 (916) 000-00-40</t></si>"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"))
        archive.writestr("_rels/.rels", (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"))
        archive.writestr("xl/workbook.xml", (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{MAIN}" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            f'<workbookPr{flag} defaultThemeVersion="166925"/>'
            '<sheets><sheet name="Рассылка" sheetId="1" r:id="rId1"/><sheet name="other" sheetId="2" r:id="rId9"/></sheets></workbook>'))
        archive.writestr("xl/_rels/workbook.xml.rels", (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            '<Relationship Id="rId9" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/>'
            '<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"))
        archive.writestr("xl/styles.xml", (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><styleSheet xmlns="{MAIN}">'
            '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
            '<fills count="1"><fill><patternFill patternType="none"/></fill></fills>'
            '<borders count="1"><border/></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
            '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            '<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
            "</styleSheet>"))
        archive.writestr("xl/sharedStrings.xml", (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="{MAIN}" count="8" uniqueCount="8">{items}</sst>'))
        archive.writestr("xl/worksheets/sheet1.xml", (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="{MAIN}" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
            'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
            'xmlns:x14ac="http://schemas.microsoft.com/office/spreadsheetml/2009/9/ac" mc:Ignorable="x14ac">'
            '<dimension ref="B1:E40"/><sheetViews><sheetView workbookViewId="0"/></sheetViews>'
            '<sheetFormatPr defaultRowHeight="15" x14ac:dyDescent="0.25"/><cols><col min="2" max="2" width="20"/></cols>'
            f'<sheetData>{rows}</sheetData><pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
            "</worksheet>"))
        archive.writestr("xl/worksheets/sheet2.xml", f'<worksheet xmlns="{MAIN}"><sheetData/></worksheet>')
    return path


def whole(path: Path) -> dict[tuple[int, int], Any]:
    """Every filled cell by (Excel row, column from A), as calamine reads the sheet whole."""
    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
    first_row, first_column = sheet.start or (0, 0)
    return {(first_row + 1 + r, first_column + c): value
            for r, row in enumerate(sheet.to_python()) for c, value in enumerate(row) if value != ""}


def in_pieces(path: Path) -> dict[tuple[int, int], Any]:
    """Every filled cell as read in pieces by read_task_file, the header row included."""
    with read_task_file(path) as task_file:
        assert task_file.split is not None, "read whole, not in pieces"
        cells = {(1, c): value for c, value in enumerate(task_file.header) if value != ""}
        for job in task_file.jobs:
            for number, row in job_rows(job):
                cells.update({(number, c): value for c, value in enumerate(row) if value != ""})
    assert not task_file.split.folder.exists(), "the pieces outlive their task file"
    return cells


@pytest.mark.parametrize("piece_bytes", [1, 300, 1 << 20])
def test_excel_xml_in_pieces_reads_as_the_whole_sheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_bytes: int) -> None:
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", piece_bytes)
    path = excel_file(tmp_path / "excel.xlsx")
    cells = in_pieces(path)
    assert cells == whole(path)
    assert cells[(2, 1)] == 79161234567
    assert cells[(2, 2)] == "Hello & welcome, <b>{name}</b>"
    assert cells[(2, 3)] == datetime(2025, 12, 9, 12, 0)
    assert cells[(2, 4)] is True
    assert (3, 2) not in cells  # the empty item is an empty cell
    assert cells[(7, 1)] == "  +7 916 000-00-07"
    assert cells[(7, 2)] == "Ваш заказ готов 📦"
    assert cells[(40, 1)] == "8 (916) 000-00-40"
    assert cells[(40, 3)] in (date(2025, 1, 1), datetime(2025, 1, 1))


def test_the_1904_date_system_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 1)
    path = excel_file(tmp_path / "mac.xlsx", date_1904=True)
    cells = in_pieces(path)
    assert cells == whole(path)
    assert cells[(2, 3)] == datetime(2029, 12, 10, 12, 0)


def test_row_numbers_and_columns_hold_when_the_sheet_starts_below_and_right_of_a1(tmp_path: Path) -> None:
    """The whole-sheet reader (CSV-like files, .xls) and the pieces number rows as Excel does."""
    path = excel_file(tmp_path / "late.xlsx", rows=SHEET_ROWS.replace('r="1"', 'r="3"', 1).replace('"B1"', '"B3"')
                      .replace('"C1"', '"C3"').replace('"D1"', '"D3"').replace('"E1"', '"E3"')
                      .replace('<row r="2" ', '<row r="5" ').replace('"B2"', '"B5"').replace('"C2"', '"C5"')
                      .replace('"D2"', '"D5"').replace('"E2"', '"E5"').replace('<row r="3" x14ac', '<row r="6" x14ac')
                      .replace('"B3" s="0"', '"B6" s="0"').replace('"C3" s="0"', '"C6" s="0"').replace('"E3" t="str"', '"E6" t="str"'))
    with read_task_file(path) as task_file:
        assert task_file.header == ["", "phone", "text", "send at", "force send"]
        rows = list(task_file.rows)
    assert rows[0][0] == 4 and rows[1][0] == 5 and rows[1][1][1] == 79161234567


def test_a_bench_file_in_pieces_reads_as_the_whole_sheet_inline_and_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 4096)
    inline = write_xlsx(tmp_path / "inline.xlsx", ingest_bench.HEADER, [ingest_bench._row(i) for i in range(600)])
    shared = with_shared_strings(inline, tmp_path / "shared.xlsx")
    assert zipfile.ZipFile(shared).read("xl/worksheets/sheet1.xml").count(b't="s"') > 3000
    with read_task_file(shared) as task_file:
        assert sum(isinstance(job, SheetPiece) for job in task_file.jobs) > 20
        # The header came from a workbook with only the first piece's texts, not the whole table.
        assert task_file.split is not None
        first = zipfile.ZipFile(task_file.split.folder / "first.xlsx").read("xl/sharedStrings.xml")
        whole_table = zipfile.ZipFile(shared).read("xl/sharedStrings.xml")
        assert 0 < first.count(b"<si>") < whole_table.count(b"<si>") // 10
    assert in_pieces(inline) == whole(inline) == in_pieces(shared) == whole(shared)


def test_unusual_xml_is_read_whole(tmp_path: Path) -> None:
    """Rows without their numbers are numbered by their place, which a piece does not know: such a
    sheet is read whole, as are the cells of a namespace-prefixed sheet."""
    unnumbered = excel_file(tmp_path / "unnumbered.xlsx", rows=SHEET_ROWS.replace(' r="', ' x="').replace('<row>', '<row>'))
    with read_task_file(unnumbered) as task_file:
        assert task_file.split is None
        assert [number for number, _row in task_file.rows] == [2, 3, 4, 5, 6]


def test_a_cell_naming_a_missing_shared_string_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 1)
    path = excel_file(tmp_path / "broken.xlsx", rows=SHEET_ROWS.replace('<c r="B40" t="s"><v>7</v>', '<c r="B40" t="s"><v>9000</v>'))
    with pytest.raises(TaskFileError, match=r"broken\.xlsx.*from row 40 on \(Cell string index not found.*save it again"):
        with read_task_file(path) as task_file:
            list(task_file.rows)
