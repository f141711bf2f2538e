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
    table = list(read(response.content).active.iter_rows(values_only=True))
    assert [r[-2] for r in table[1:]] == ["valid", "invalid"]


def test_it_recomputes_the_report_when_stored_errors_were_cut(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks, eager
):
    with django_capture_on_commit_callbacks(execute=True):
        upload = services.upload_create(
            uploader=operator1, file=as_upload(xlsx([["bad", 1]] * 3)), validate_only=True
        )
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        errors=[], summary={"complete": False, "total": 3}
    )
    response = client_for(operator1).get(reverse("workbooks:error-report", args=[upload.pk]))
    table = list(read(response.content).active.iter_rows(values_only=True))
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
