"""The template and the error report (written with openpyxl, read back here)."""

import io

import pytest
from django.urls import reverse
from openpyxl import load_workbook

from apps.workbooks import services
from apps.workbooks.models import WorkbookUpload
from apps.workbooks.writers import error_report_workbook, text_cell

from .conftest import as_upload

pytestmark = pytest.mark.django_db
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NASTY = ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "=1"]


def read(content: bytes, **kwargs):
    return load_workbook(io.BytesIO(content), **kwargs)


def served(response) -> bytes:
    assert response.status_code == 200, response.status_code
    try:
        return b"".join(response.streaming_content)
    finally:
        response.close()


def no_formulas(workbook) -> None:
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", cell.coordinate


def test_it_writes_a_template_with_the_users_machines(client_for, operator2):
    response = client_for(operator2).get(reverse("workbooks:template"))
    assert response.status_code == 200 and response["Content-Type"] == XLSX
    assert "attachment" in response["Content-Disposition"]
    workbook = read(response.content)
    assert workbook.sheetnames == ["Setpoints", "Instructions"]
    sheet = workbook["Setpoints"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("Machine ID", "Target Speed", "Mode", "Machine name", "Line")
    codes = [row[0] for row in rows[1:]]
    assert codes == ["m:401", "m:402", "m:403", "m:404", "m:501", "m:502", "m:503", "m:504"]
    validations = {dv.type: dv for dv in sheet.data_validations.dataValidation}
    assert validations["list"].formula1 == '"RUN,IDLE,MAINTENANCE"'
    assert str(validations["list"].sqref).startswith("C2:C")
    whole = validations["whole"]
    assert (whole.operator, whole.formula1, whole.formula2) == ("between", "0", "3000")
    assert str(whole.sqref).startswith("B2:B")
    assert "Target Speed" in " ".join(str(c.value) for c in workbook["Instructions"]["A"])
    no_formulas(workbook)


def test_the_template_uploads_cleanly(client_for, operator1, tmp_path):
    content = client_for(operator1).get(reverse("workbooks:template")).content
    (path := tmp_path / "template.xlsx").write_bytes(content)
    from apps.workbooks.parsing import MachineIndex, parse_workbook

    batch = parse_workbook(path, index=MachineIndex.for_user(operator1))
    # Pre-filled machines have no target speed yet: the operator fills it in.
    assert batch.summary["total"] == 4 and batch.summary["invalid"] == 4
    assert {e["column"] for e in batch.errors} == {"B"}


def test_it_writes_machine_names_as_text_never_formulas(client_for, operator1, plant):
    machine = plant.machines["m:401"]
    machine.name = "=cmd|' /C calc'!A0"
    machine.save()
    workbook = read(client_for(operator1).get(reverse("workbooks:template")).content)
    assert workbook["Setpoints"]["D2"].value == "=cmd|' /C calc'!A0"
    no_formulas(workbook)


@pytest.mark.parametrize("value", NASTY)
def test_it_forces_formula_like_text_to_text(tmp_path, value):
    from openpyxl import Workbook

    workbook = Workbook()
    cell = text_cell(workbook.active["A1"], value)
    path = tmp_path / "t.xlsx"
    workbook.save(path)
    read_back = load_workbook(path)["Sheet"]["A1"]
    # XML turns a bare CR into LF on reading; what matters is that it stays text.
    assert read_back.data_type == "s" and read_back.value == value.replace("\r", "\n")
    assert read_back.quotePrefix if value[0] in "=+-@" else True
    assert cell.data_type == "s"


def test_it_writes_an_error_report_with_status_and_highlighted_cells(xlsx, operator1):
    rows = [
        ["m:401", 100, "RUN"],
        ["m:402", "fast", "IDLE"],
        ['=HYPERLINK("http://evil","x")', 5, None],
        ["m:401", 200, None],
        ["+cmd", 1, "@SUM(A1)"],
    ]
    path = xlsx(rows)
    from apps.workbooks.parsing import MachineIndex

    content = error_report_workbook(path=path, index=MachineIndex.for_user(operator1))
    workbook = read(content)
    no_formulas(workbook)
    sheet = workbook.active
    table = list(sheet.iter_rows(values_only=True))
    assert table[0] == ("Row", "Machine ID", "Target Speed", "Mode", "Status", "Messages")
    assert [r[0] for r in table[1:]] == [2, 3, 4, 5, 6]
    statuses = [r[4] for r in table[1:]]
    assert statuses == ["ignored", "invalid", "invalid", "valid", "invalid"]
    assert "B3: Target Speed must be a number, not 'fast'." in table[2][5]
    assert table[5][1] == "+cmd" and table[5][3] == "@SUM(A1)"
    assert sheet["C3"].fill.fgColor.rgb.endswith("FFC7CE")  # the bad Target Speed cell
    assert sheet["B3"].fill.fgColor.rgb in (None, "00000000")


def test_it_serves_the_error_report_of_a_parsed_upload(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks, eager
):
    with django_capture_on_commit_callbacks(execute=True):
        upload = services.upload_create(
            uploader=operator1,
            file=as_upload(xlsx([["m:401", 1], ["m:9", 2]])),
            validate_only=True,
        )
    response = client_for(operator1).get(reverse("workbooks:error-report", args=[upload.pk]))
    assert response.status_code == 200 and response["Content-Type"] == XLSX
    table = list(read(served(response)).active.iter_rows(values_only=True))
    assert [r[-2] for r in table[1:]] == ["valid", "invalid"]


def test_it_recomputes_the_report_when_stored_errors_were_cut(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks, eager
):
    with django_capture_on_commit_callbacks(execute=True):
        upload = services.upload_create(
            uploader=operator1, file=as_upload(xlsx([["bad", 1]] * 3)), validate_only=True
        )
    # Only the first errors are kept on the upload; the report has them all.
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        errors=[], summary={"complete": False, "total": 3}
    )
    response = client_for(operator1).get(reverse("workbooks:error-report", args=[upload.pk]))
    table = list(read(served(response)).active.iter_rows(values_only=True))
    assert [r[-2] for r in table[1:]] == ["invalid"] * 3


def test_it_has_no_report_for_a_rejected_upload(client_for, operator1):
    upload = WorkbookUpload.objects.create(
        uploader=operator1,
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
        status="rejected",
    )
    url = reverse("workbooks:error-report", args=[upload.pk])
    assert client_for(operator1).get(url).status_code == 404


def cell_facts(sheet) -> dict:
    return {
        c.coordinate: (c.value, c.data_type, c.quotePrefix, c.fill.fgColor.rgb)
        for row in sheet.iter_rows()
        for c in row
        if c.value is not None
    }


def text_workbook(path, rows):
    """An upload whose cells hold formula-like text as text (the way Excel
    stores '=1+1 typed with the apostrophe), not as formulas."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            cell = sheet.cell(row=r, column=c)
            text_cell(cell, value) if isinstance(value, str) else setattr(cell, "value", value)
    workbook.save(path)
    return path


def test_the_report_writes_every_text_cell_as_text(tmp_path, operator1):
    """Plain values and styled cells alike: what was uploaded comes back as
    the same text, never a formula or an error cell, formula prefixes quoted."""
    from apps.workbooks.parsing import MachineIndex

    tricky = NASTY + ["#N/A", "#DIV/0!", "=", " padded ", "plain"]
    rows = [["Machine ID", "Target Speed", "Mode", "=Notes"]]
    rows += [["m:401", 100 + n, "RUN", value] for n, value in enumerate(tricky)]
    rows += [[value, 5, "RUN", "ok"] for value in tricky]  # invalid Machine IDs
    path = text_workbook(tmp_path / "tricky.xlsx", rows)
    workbook = read(error_report_workbook(path=path, index=MachineIndex.for_user(operator1)))
    no_formulas(workbook)
    facts = cell_facts(workbook.active)
    assert facts["E1"][:3] == ("=Notes", "s", True)
    quoted = ("=", "+", "-", "@", "\t", "\r")
    for row, value in enumerate(tricky, start=2):
        shown = value.replace("\r", "\n")  # XML reads a bare CR back as LF
        note = facts[f"E{row}"]  # a valid row: written as plain values where safe
        assert note[:3] == (shown, "s", shown.startswith(quoted)), (row, note)
        bad = facts[f"B{row + len(tricky)}"]  # an invalid Machine ID: a red cell
        assert bad[:3] == (shown, "s", shown.startswith(quoted)), (row, bad)
        assert bad[3].endswith("FFC7CE")
    assert facts["C2"] == (100, "n", False, "00000000")


def test_the_report_colours_invalid_cells_red_and_warned_cells_yellow(xlsx, operator1):
    rows = [["m:401", 100], ["m:402", "200"], ["m:401", 300], ["m:403", 5000]]
    from apps.workbooks.parsing import MachineIndex

    content = error_report_workbook(path=xlsx(rows), index=MachineIndex.for_user(operator1))
    sheet = read(content).active
    fill = {c: sheet[c].fill.fgColor.rgb[-6:] for c in ("B2", "C3", "B4", "C5", "E5", "E2")}
    assert fill == {
        "B2": "FFEB9C",  # m:401 is listed again in row 4: this row is ignored
        "C3": "FFEB9C",  # "200" was stored as text
        "B4": "000000",
        "C5": "FFC7CE",  # out of range
        "E5": "FFC7CE",  # the status of an invalid row
        "E2": "000000",
    }
    table = list(sheet.iter_rows(values_only=True))
    assert [r[4] for r in table[1:]] == ["ignored", "valid", "valid", "invalid"]
    # Messages name the cell of the uploaded sheet (the report adds a Row column).
    assert table[2][5] == "B3: Target Speed '200' was stored as text; read as a number. (warning)"


def test_the_report_calls_back_with_its_progress(xlsx, operator1, monkeypatch):
    from apps.workbooks import writers
    from apps.workbooks.parsing import MachineIndex

    monkeypatch.setattr(writers, "PROGRESS_ROWS", 10)
    seen = []
    written = writers.error_report_write(
        path=xlsx([["m:401", n] for n in range(25)]),
        index=MachineIndex.for_user(operator1),
        target=io.BytesIO(),
        on_progress=seen.append,
    )
    assert seen == [10, 20] and written == 25
