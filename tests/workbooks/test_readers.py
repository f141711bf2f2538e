"""The two readers behind `readers.open_rows`: calamine, when the guard lets
a file through, reads the same rows, values and Excel row numbers as
openpyxl; and a file that would make calamine allocate a dense range of
gigabytes never reaches it."""

import subprocess
import sys
import textwrap
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference

from apps.workbooks import readers
from apps.workbooks.parsing import MachineIndex, WorkbookRejected, parse_workbook

ROOT = Path(__file__).resolve().parents[2]


def rows_of(path, engine):
    with readers.open_rows(path, engine=engine) as sheet:
        return sheet.engine, sheet.title, [(n, _trimmed(v)) for n, v in sheet.rows]


def _trimmed(values) -> tuple:
    values = list(values)
    while values and values[-1] is None:
        values.pop()
    return tuple(values)


def book(path, cells: dict, *, title="Setpoints") -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = title
    for ref, value in cells.items():
        sheet[ref] = value
    workbook.save(path)
    return path


def rewrite_sheet(path, edit) -> Path:
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts["xl/worksheets/sheet1.xml"] = edit(parts["xl/worksheets/sheet1.xml"].decode()).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def with_cached_value(path, ref, cached) -> Path:
    def edit(sheet: str) -> str:
        start = sheet.index(f'<c r="{ref}"')
        end = sheet.index("</c>", start)
        cell = sheet[start:end].replace("<v />", "").replace("<v/>", "")
        return sheet[:start] + cell + f"<v>{cached}</v>" + sheet[end:]

    return rewrite_sheet(path, edit)


# Same rows from both readers
# ---------------------------


CASES = {
    "offset_start_c4": {
        "C4": "Machine ID",
        "D4": "Target Speed",
        "C5": "m:401",
        "D5": 1500,
        "D7": 2.5,
        "E9": "late",
    },
    "blanks_and_spaces": {
        "A1": "Machine ID",
        "B1": "Target Speed",
        "A2": "m:401",
        "A4": "   ",
        "B6": None,
        "A7": "m:402",
        "B7": 0,
        "C9": "",
    },
    "numbers_as_text_and_types": {
        "A1": "Machine ID",
        "B1": "Target Speed",
        "A2": "m:401",
        "B2": "1500",
        "A3": 401,
        "B3": 1500.0,
        "A4": True,
        "B4": 1e300,
        "A5": -0.5,
        "B5": "1e3",
        "A6": datetime(2024, 1, 2, 3, 4, 5),
        "B6": datetime(2024, 1, 2),
        "A7": "<script>alert(1)</script>",
        "B7": '=HYPERLINK("http://x","1")',  # no cached value: blank
    },
    "wide_row_beyond_max_columns": {"A1": "Machine ID", "B1": "Target Speed", "CA2": "far"},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_calamine_reads_the_same_rows_as_openpyxl(tmp_path, case):
    path = book(tmp_path / f"{case}.xlsx", CASES[case])
    fast, slow = rows_of(path, "auto"), rows_of(path, "openpyxl")
    assert fast[0] == "calamine" and slow[0] == "openpyxl"
    assert fast[1:] == slow[1:]
    for (_, a), (_, b) in zip(fast[2], slow[2], strict=True):
        assert [type(v) for v in a] == [type(v) for v in b]


def test_formula_cells_read_as_their_cached_values_in_both(tmp_path):
    path = book(
        tmp_path / "f.xlsx",
        {"A1": "Machine ID", "B1": "Target Speed", "A2": "m:401", "B2": "=1000+500"},
    )
    with_cached_value(path, "B2", "1500")
    fast, slow = rows_of(path, "auto"), rows_of(path, "openpyxl")
    assert fast[0] == "calamine"
    assert fast[2] == slow[2] == [(1, ("Machine ID", "Target Speed")), (2, ("m:401", 1500))]


def test_data_starting_at_c4_keeps_excel_rows_and_columns(tmp_path):
    path = book(tmp_path / "c4.xlsx", CASES["offset_start_c4"])
    engine, _, rows = rows_of(path, "auto")
    assert engine == "calamine"
    assert rows == [
        (4, (None, None, "Machine ID", "Target Speed")),
        (5, (None, None, "m:401", 1500)),
        (7, (None, None, None, 2.5)),
        (9, (None, None, None, None, "late")),
    ]


def test_errors_name_the_same_cells_through_calamine(tmp_path, settings):
    path = book(tmp_path / "c4.xlsx", CASES["offset_start_c4"] | {"C7": "m:402", "C9": "m:401"})
    index = MachineIndex(line_by_machine={"m:401": "01", "m:402": "01"}, operated_lines={"01"})
    batch = parse_workbook(path, index=index)
    assert batch.header_row == 4
    assert [f"{e['column']}{e['row']}: {e['message']}" for e in batch.errors] == [
        "D7: Target Speed must be a whole number, not 2.5.",
        "D9: Target Speed is empty.",
    ]
    assert batch.warnings[0]["column"] == "C" and batch.warnings[0]["row"] == 5


def test_it_reads_the_first_worksheet_in_workbook_order(tmp_path):
    workbook = Workbook()
    workbook.active.title = "Second"
    workbook.active["A1"] = "second"
    first = workbook.create_sheet("First", 0)
    first["A1"] = "first"
    chart = BarChart()
    chart.add_data(Reference(first, min_col=1, min_row=1, max_row=1))
    workbook.create_chartsheet("Chart", 0).add_chart(chart)  # chartsheets are never read
    path = tmp_path / "order.xlsx"
    workbook.save(path)
    fast, slow = rows_of(path, "auto"), rows_of(path, "openpyxl")
    assert fast[0] == "calamine"
    assert fast[1:] == slow[1:] == ("First", [(1, ("first",))])


def test_progress_is_reported_in_chunks_through_calamine(tmp_path):
    path = tmp_path / "many.xlsx"
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("S")
    sheet.append(["Machine ID", "Target Speed"])
    for n in range(1203):
        sheet.append(["m:401", n % 3000])
    workbook.save(path)
    assert readers.calamine_allowed(path)[0]
    index = MachineIndex(line_by_machine={"m:401": "01"}, operated_lines={"01"})
    calls = []
    batch = parse_workbook(path, index=index, on_chunk=lambda done, total: calls.append(done))
    assert calls[:2] == [500, 1000] and calls[-1] == 1203
    assert batch.row_of_machine == {"m:401": 1204}


def test_a_calamine_failure_falls_back_to_openpyxl(tmp_path, monkeypatch):
    import python_calamine

    def broken(*args, **kwargs):
        raise python_calamine.CalamineError("nope")

    monkeypatch.setattr(python_calamine.CalamineWorkbook, "from_path", broken)
    path = book(tmp_path / "b.xlsx", {"A1": "x"})
    assert rows_of(path, "auto") == ("openpyxl", "Setpoints", [(1, ("x",))])


def test_a_damaged_workbook_is_still_rejected(tmp_path):
    path = tmp_path / "damaged.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WorkbookRejected) as caught:
        readers.open_rows(path)
    assert caught.value.code == "corrupt"


# The guard
# ---------


def bomb(path) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Machine ID", "Target Speed"])
    sheet.append(["m:401", 5])
    sheet["XFD1048576"] = 1  # calamine: a 1048576 x 16384 dense range, ~512 GB
    workbook.save(path)
    return path


def test_the_xfd1048576_bomb_never_reaches_calamine(tmp_path):
    path = bomb(tmp_path / "bomb.xlsx")
    assert path.stat().st_size < 10_000
    allowed, why = readers.calamine_allowed(path)
    assert not allowed and "16384" in why


def test_the_bomb_is_read_by_openpyxl_in_a_child_process(tmp_path):
    # In a child with a 2 GB address space: if the guard ever regresses,
    # calamine aborts the child, not pytest.
    path = bomb(tmp_path / "bomb.xlsx")
    script = textwrap.dedent(
        f"""
        import os, resource, django
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetops.settings")
        django.setup()
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from apps.workbooks import readers
        with readers.open_rows({str(path)!r}) as sheet:
            print(sheet.engine, [(n, v[:2]) for n, v in sheet.rows])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        "openpyxl [(1, ('Machine ID', 'Target Speed')), (2, ('m:401', 5))]"
    ), done.stdout[:500]


def sheet_xml(cells: str, dimension: str = "A1") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<dimension ref="{dimension}"/><sheetData>{cells}</sheetData></worksheet>'
    ).encode()


def verdict(data: bytes, chunk: int | None = None, monkeypatch=None) -> tuple[bool, str]:
    import io

    if chunk:
        monkeypatch.setattr(readers, "SCAN_CHUNK", chunk)
    extent = readers.Extent()
    readers.scan_part(io.BytesIO(data), extent)
    return readers.calamine_verdict(extent)


@pytest.mark.parametrize(
    ("cells", "dimension", "allowed"),
    [
        ('<row r="1"><c r="A1"><v>1</v></c><c r="C1" t="s"><v>0</v></c></row>', "A1:C1", True),
        ('<row r="1048576"><c r="A1048576"><v>1</v></c></row>', "A1", True),
        ('<row r="1"><c r="XFD1"><v>1</v></c></row>', "A1", False),  # 16384 columns
        ('<row r="1"><c r="IW1"><v>1</v></c></row>', "A1", False),  # 257 columns
        ('<row r="1"><c r="IV1"><v>1</v></c></row>', "A1", True),  # 256 columns
        ('<row r="100000"><c r="Z100000"><v>1</v></c></row>', "A1", False),  # 2.6M cells
        ('<row r="1"><c r="xfd1048576"><v>1</v></c></row>', "A1", False),  # lower case
        ("<row r='1'><c r = 'XFD1'><v>1</v></c></row>", "A1", False),  # quotes, spaces
        ('<row r="1"><c r="$XFD$1"><v>1</v></c></row>', "A1", False),
        ('<row r="1"><c r="A1"><v>1</v></c></row>', "A1:XFD1048576", False),  # dimension
        ('<row r="1048576"><c><v>1</v></c><c><v>2</v></c></row>', "A1", False),  # no r
        ('<row r="1"><c r="A1"><v>1</v></c><c><v>2</v></c></row>', "A1", False),
        ('<row r="1"><c r="A99999999"><v>1</v></c></row>', "A1", False),  # not a plain ref
        ('<row r="1"><c r="ABCD1"><v>1</v></c></row>', "A1", False),
        ('<row r="1"><c r="A1" t="e"><v>#DIV/0!</v></c></row>', "A1", False),  # error cell
        ('<row r="1"><c r="A1" t="d"><v>2024-01-01</v></c></row>', "A1", False),  # ISO date
    ],
)
def test_the_guard_rule(cells, dimension, allowed, monkeypatch):
    data = sheet_xml(cells, dimension)
    assert verdict(data)[0] is allowed
    # The same decision whatever the chunk boundaries.
    for chunk in (1, 3, 7, 64):
        assert verdict(data, chunk, monkeypatch)[0] is allowed


def test_the_guard_sees_namespace_prefixed_cells(monkeypatch):
    data = (
        b'<x:worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b'<x:sheetData><x:row r="1"><x:c r="XFD1048576"><x:v>1</x:v></x:c></x:row>'
        b"</x:sheetData></x:worksheet>"
    )
    assert verdict(data)[0] is False


@pytest.mark.parametrize("lead", ["<", "<x:"])
@pytest.mark.parametrize("end", [" ", "\t", "\n", "\r", ">", "/"])
def test_the_guard_counts_every_way_a_cell_tag_can_open(lead, end, monkeypatch):
    # One canonical cell, and one the reference scan cannot read (the name
    # ends in something other than ' r="'): the counts differ, so openpyxl.
    odd = {">": f"{lead}c><v>2</v></c>", "/": f"{lead}c/>"}.get(end, f'{lead}c{end}t="n" r="B1"/>')
    data = sheet_xml(f'<row r="1"><c r="A1"><v>1</v></c>{odd}</row>')
    for chunk in (None, 1, 5):
        allowed, why = verdict(data, chunk, monkeypatch)
        assert not allowed and "2 cell tags but 1 plain references" in why, (why, chunk)


def test_the_guard_refuses_utf16_parts():
    data = sheet_xml('<row r="1"><c r="A1"><v>1</v></c></row>').decode().encode("utf-16")
    assert verdict(data) == (False, "utf-16 part")


def test_the_guard_scans_every_part_of_the_package(tmp_path):
    # A second sheet's far cell counts too: whatever part calamine reads
    # was scanned.
    workbook = Workbook()
    workbook.active["A1"] = "ok"
    workbook.create_sheet("Other")["XFD1"] = 1
    path = tmp_path / "two.xlsx"
    workbook.save(path)
    assert readers.calamine_allowed(path)[0] is False
    assert rows_of(path, "auto") == ("openpyxl", "Sheet", [(1, ("ok",))])
