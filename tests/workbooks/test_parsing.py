"""The parsing rules, on workbooks built here."""

import uuid

import pytest
from openpyxl import Workbook

from apps.workbooks import parsing
from apps.workbooks.parsing import MachineIndex, WorkbookRejected, parse_workbook

pytestmark = pytest.mark.django_db


@pytest.fixture
def index(operator1):
    return MachineIndex.for_user(operator1)


def messages(items) -> list[str]:
    return [f"{e['column']}{e['row']}: {e['message']}" for e in items]


def test_it_parses_a_valid_sheet_into_a_batch(xlsx, index):
    path = xlsx([["m:401", 1500, "RUN"], ["m:402", 0, None], ["m:403", 3000, "MAINTENANCE"]])
    batch = parse_workbook(path, index=index)
    assert isinstance(batch.tx_id, uuid.UUID)
    assert batch.valid_rows == {
        "m:401": {"target_speed": 1500, "mode": "RUN"},
        "m:402": {"target_speed": 0},
        "m:403": {"target_speed": 3000, "mode": "MAINTENANCE"},
    }
    assert batch.errors == [] and batch.warnings == []
    assert batch.summary == {"total": 3, "valid": 3, "invalid": 0, "warnings": 0}


def test_it_finds_the_header_within_the_first_ten_rows_ignoring_case_spaces_and_extras(xlsx, index):
    path = xlsx(
        [["note", "m:401", 1200]],
        header=["Comment", "  machine id ", "TARGET SPEED"],
        before=[[], [], []],
    )
    batch = parse_workbook(path, index=index)
    assert batch.header_row == 4
    assert batch.valid_rows == {"m:401": {"target_speed": 1200}}


def test_it_rejects_a_header_lacking_columns_as_invalid_template_naming_them(xlsx, index):
    path = xlsx([["m:401", "RUN"]], header=["Machine ID", "Mode"])
    with pytest.raises(WorkbookRejected) as caught:
        parse_workbook(path, index=index)
    assert caught.value.code == "template"
    assert "Invalid Template" in caught.value.message
    assert "Target Speed" in caught.value.message and "Machine ID" not in caught.value.message


def test_it_takes_the_first_non_empty_row_as_the_header(xlsx, index):
    path = xlsx([["m:401", 1]], before=[["Setpoints for the night shift"]])
    with pytest.raises(WorkbookRejected, match=r"header \(row 1 of sheet 'Setpoints'\) lacks"):
        parse_workbook(path, index=index)


def test_it_rejects_a_sheet_without_header_in_the_first_ten_rows(xlsx, index):
    path = xlsx([["m:401", 1]], before=[[]] * 10, header=["Machine ID", "Target Speed"])
    with pytest.raises(WorkbookRejected, match="Invalid Template: no header row"):
        parse_workbook(path, index=index)


def test_it_reads_numbers_stored_as_text_with_a_warning(xlsx, index):
    path = xlsx([["m:401", " 100 ", None], ["m:402", "1500.0", None]])
    batch = parse_workbook(path, index=index)
    assert batch.valid_rows == {"m:401": {"target_speed": 100}, "m:402": {"target_speed": 1500}}
    assert messages(batch.warnings) == [
        "B2: Target Speed '100' was stored as text; read as a number.",
        "B3: Target Speed '1500.0' was stored as text; read as a number.",
    ]
    assert batch.summary["warnings"] == 2


def test_it_turns_whole_floats_into_ints(xlsx, index):
    batch = parse_workbook(xlsx([["m:401", 1500.0]]), index=index)
    assert batch.valid_rows["m:401"]["target_speed"] == 1500
    assert type(batch.valid_rows["m:401"]["target_speed"]) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "Target Speed must be a number, not 'fast'."),
        (True, "Target Speed must be a number, not 'True'."),
        (None, "Target Speed is empty."),
        (1500.5, "Target Speed must be a whole number, not 1500.5."),
        (3001, "Target Speed must be from 0 to 3000, not 3001."),
        (-1, "Target Speed must be from 0 to 3000, not -1."),
        ("nan", "Target Speed must be a number, not 'nan'."),
        ("1500.5", "Target Speed must be a whole number, not 1500.5."),
        ("1e3", "Target Speed must be written with the digits 0–9 only (like 1500), not '1e3'."),
        (
            "1_500",
            "Target Speed must be written with the digits 0–9 only (like 1500), not '1_500'.",
        ),
        (
            "１５００",
            "Target Speed must be written with the digits 0–9 only (like 1500), not '１５００'.",
        ),
        (
            "15 00",
            "Target Speed must be written with the digits 0–9 only (like 1500), not '15 00'.",
        ),
    ],
)
def test_it_flags_a_bad_target_speed_with_row_and_column(xlsx, index, value, message):
    batch = parse_workbook(xlsx([["m:402", 10], ["m:401", value]]), index=index)
    assert messages(batch.errors) == [f"B3: {message}"]
    assert batch.valid_rows == {"m:402": {"target_speed": 10}}
    assert batch.summary == {"total": 2, "valid": 1, "invalid": 1, "warnings": 0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("401", "Machine ID must look like m:401, not '401'."),
        (401, "Machine ID must look like m:401, not '401'."),
        ("m:40a", "Machine ID must look like m:401, not 'm:40a'."),
        (None, "Machine ID is empty."),
        ("m:999", "Machine m:999 does not exist."),
        ("m:501", "You do not operate line 02 (machine m:501)."),
    ],
)
def test_it_flags_a_bad_machine_id(xlsx, index, value, message):
    batch = parse_workbook(xlsx([[value, 100]]), index=index)
    assert messages(batch.errors) == [f"A2: {message}"]
    assert batch.valid_rows == {}


def test_it_checks_the_mode_and_accepts_it_in_any_case(xlsx, index):
    path = xlsx([["m:401", 1, "run"], ["m:402", 2, "FAST"]])
    batch = parse_workbook(path, index=index)
    assert batch.valid_rows == {"m:401": {"target_speed": 1, "mode": "RUN"}}
    assert messages(batch.errors) == ["C3: Mode must be one of RUN, IDLE, MAINTENANCE, not 'FAST'."]


def test_it_names_the_column_letters_the_user_sees(xlsx, index):
    header = ["Notes", "Machine ID", "Mode", "Target Speed"]
    path = xlsx([["x", "m:401", "IDLE", "slow"]], header=header)
    batch = parse_workbook(path, index=index)
    assert messages(batch.errors) == ["D2: Target Speed must be a number, not 'slow'."]


def test_it_keeps_the_last_row_of_a_machine_listed_twice_and_warns_about_the_first(xlsx, index):
    path = xlsx([["m:401", 100], ["m:402", 5], ["m:401", 200, "IDLE"]])
    batch = parse_workbook(path, index=index)
    assert batch.valid_rows["m:401"] == {"target_speed": 200, "mode": "IDLE"}
    assert messages(batch.warnings) == [
        "A2: m:401 is listed again in row 4; this row is ignored and the last one is used."
    ]
    assert batch.summary == {"total": 3, "valid": 2, "invalid": 0, "warnings": 1}


def test_it_skips_blank_rows_and_keeps_excel_row_numbers(xlsx, index):
    path = xlsx([["m:401", 1], [], [None, "  "], ["m:402", "x"]])
    batch = parse_workbook(path, index=index)
    assert batch.summary["total"] == 2
    assert messages(batch.errors) == ["B5: Target Speed must be a number, not 'x'."]


def test_it_flags_a_machine_in_a_safety_state(xlsx, operator1, plant):
    machine = plant.machines["m:401"]
    machine.status_id = "EMERGENCY_STOP"
    machine.save()
    batch = parse_workbook(xlsx([["m:401", 1]]), index=MachineIndex.for_user(operator1))
    assert messages(batch.errors) == [
        "A2: Machine m:401 is in EMERGENCY_STOP; setpoints are refused until it leaves that state."
    ]


def test_it_flags_a_machine_locked_out_at_the_console(xlsx, operator1, plant):
    from django.utils import timezone

    machine = plant.machines["m:402"]
    machine.maintenance_locked_at = timezone.now()  # its reports still say RUNNING
    machine.save()
    batch = parse_workbook(
        xlsx([["m:401", 1], ["m:402", 1]]), index=MachineIndex.for_user(operator1)
    )
    assert batch.valid_rows == {"m:401": {"target_speed": 1}}
    assert messages(batch.errors) == [
        "A3: Machine m:402 is in MAINTENANCE_LOCK; "
        "setpoints are refused until it leaves that state."
    ]


def test_it_reads_the_cached_value_of_formula_cells(tmp_path, index):
    # openpyxl writes no cached value; a workbook saved by Excel has one.
    path = tmp_path / "formulas.xlsx"
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Machine ID", "Target Speed"])
    sheet.append(["m:401", "=1000+500"])
    workbook.save(path)
    _with_cached_value(path, "B2", "1500")
    batch = parse_workbook(path, index=index)
    assert batch.valid_rows == {"m:401": {"target_speed": 1500}}


def _with_cached_value(path, ref, cached):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    start = sheet.index(f'<c r="{ref}"')
    end = sheet.index("</c>", start)
    cell = sheet[start:end]
    cell = cell.replace("<v />", "").replace("<v/>", "")
    sheet = sheet[:start] + cell + f"<v>{cached}</v>" + sheet[end:]
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def test_it_treats_script_and_hyperlink_cells_as_plain_values(xlsx, index):
    path = xlsx([["<script>alert(1)</script>", 1], ["m:401", '=HYPERLINK("http://x","1")']])
    batch = parse_workbook(path, index=index)
    assert messages(batch.errors) == [
        "A2: Machine ID must look like m:401, not '<script>alert(1)</script>'.",
        # A formula without a cached value reads as empty: never evaluated.
        "B3: Target Speed is empty.",
    ]


def test_it_reports_progress_in_chunks(xlsx, index):
    path = xlsx([["m:401", n % 3000] for n in range(1203)])
    calls = []
    batch = parse_workbook(path, index=index, on_chunk=lambda done, total: calls.append(done))
    assert calls[:2] == [500, 1000] and calls[-1] == 1203
    assert batch.summary["total"] == 1203


def test_it_refuses_more_rows_than_the_limit(xlsx, index, settings):
    settings.WORKBOOK_MAX_ROWS = 5
    with pytest.raises(WorkbookRejected, match="more than 5 rows"):
        parse_workbook(xlsx([["m:401", 1]] * 6), index=index)


def test_it_accepts_100000_rows_by_default_and_refuses_one_more(tmp_path, index):
    path = tmp_path / "big.xlsx"
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Setpoints")
    sheet.append(["Machine ID", "Target Speed"])
    for n in range(100_001):
        sheet.append(["m:401", n % 3000])
    workbook.save(path)
    seen = []
    message = "more than 100,000 rows; split it into several workbooks of at most 100,000"
    with pytest.raises(WorkbookRejected, match=message):
        parse_workbook(path, index=index, on_chunk=lambda done, total: seen.append(done))
    assert seen[-1] == 100_000  # every row up to the limit was read and checked


def test_it_ignores_columns_and_far_cells_without_padding_memory(tmp_path, index):
    path = tmp_path / "sparse.xlsx"
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Machine ID", "Target Speed"])
    sheet.append(["m:401", 5])
    sheet["XFD1048576"] = 1  # calamine would allocate 512 GB for this one cell
    workbook.save(path)
    batch = parse_workbook(path, index=index)
    assert batch.valid_rows == {"m:401": {"target_speed": 5}}
    assert batch.summary["total"] == 1


def test_it_uses_the_first_worksheet(tmp_path, index):
    path = tmp_path / "two.xlsx"
    workbook = Workbook()
    workbook.active.append(["Nothing", "here"])
    other = workbook.create_sheet("Second")
    other.append(["Machine ID", "Target Speed"])
    workbook.save(path)
    with pytest.raises(WorkbookRejected, match="sheet 'Sheet'"):
        parse_workbook(path, index=index)


def test_it_casts_target_speed_values():
    assert parsing.cast_target_speed(7) == (7, None, None)
    assert parsing.cast_target_speed(1500.0) == (1500, None, None)
    assert parsing.cast_target_speed(" 1500.0 ")[0] == 1500
    assert parsing.cast_target_speed("1e3")[0] is None
    assert parsing.cast_target_speed(float("inf"))[1] == "Target Speed must be a number, not 'inf'."
