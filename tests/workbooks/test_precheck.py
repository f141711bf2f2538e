"""Files refused before any XML is parsed, each with a message saying what
the file is and what to upload instead."""

import zipfile

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

from apps.workbooks.precheck import OLE2_MAGIC, WorkbookRejected, check_extension, precheck


def rejected(path, deep=True) -> WorkbookRejected:
    with pytest.raises(WorkbookRejected) as caught:
        precheck(path, deep=deep)
    return caught.value


def write_zip(path, parts: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


MINIMAL = {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"}


def test_it_accepts_a_real_xlsx(xlsx):
    precheck(xlsx([["m:401", 1]]), deep=True)


def test_it_refuses_an_empty_file(tmp_path):
    (path := tmp_path / "empty.xlsx").write_bytes(b"")
    assert rejected(path).message == "The file is empty."


def test_it_refuses_a_text_file_named_xlsx(tmp_path):
    (path := tmp_path / "list.xlsx").write_text("Machine ID,Target Speed\nm:401,100\n")
    error = rejected(path)
    assert "not an Excel workbook" in error.message and ".xlsx" in error.message


def test_it_names_a_legacy_xls_file(tmp_path):
    body = OLE2_MAGIC + b"\0" * 600 + "Workbook".encode("utf-16-le")
    (path := tmp_path / "old.xlsx").write_bytes(body)
    assert "legacy Excel 97-2003 workbook (.xls)" in rejected(path).message


def test_it_names_a_password_protected_workbook(tmp_path):
    body = OLE2_MAGIC + b"\0" * 600 + "EncryptedPackage".encode("utf-16-le")
    (path := tmp_path / "secret.xlsx").write_bytes(body)
    error = rejected(path)
    assert "password protected" in error.message and "Remove the password" in error.message


def test_it_refuses_a_truncated_workbook(xlsx, tmp_path):
    data = xlsx([["m:401", 1]] * 200).read_bytes()
    (path := tmp_path / "cut.xlsx").write_bytes(data[: len(data) // 2])
    assert "damaged or truncated" in rejected(path).message


def test_it_refuses_a_workbook_whose_parts_are_corrupt(xlsx, tmp_path):
    source = xlsx([[f"m:{n}", n] for n in range(400)])
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(source.read_bytes())
    for offset in range(start + 20, start + 60):
        data[offset] ^= 0x5A
    (path := tmp_path / "flipped.xlsx").write_bytes(bytes(data))
    precheck(path)  # the zip directory alone looks fine
    assert "damaged or truncated" in rejected(path).message


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            {"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b""},
            "OpenDocument spreadsheet (.ods)",
        ),
        (
            {"[Content_Types].xml": b"<Types/>", "xl/workbook.bin": b"\0"},
            "Excel binary workbook (.xlsb)",
        ),
        (MINIMAL | {"xl/vbaProject.bin": b"\0"}, "macro-enabled workbook (.xlsm)"),
        (
            {
                "[Content_Types].xml": b'<Override ContentType="application/vnd.ms-excel.sheet.'
                b'macroEnabled.main+xml"/>',
                "xl/workbook.xml": b"",
            },
            "macro-enabled workbook",
        ),
        ({"word/document.xml": b"<document/>"}, "has no xl/workbook.xml part"),
    ],
)
def test_it_names_other_packages(tmp_path, parts, expected):
    path = write_zip(tmp_path / "other.xlsx", parts)
    error = rejected(path, deep=False)
    assert expected in error.message
    assert "save it as an Excel Workbook (.xlsx)" in error.message or "xl/workbook" in expected


def test_it_caps_the_number_of_entries(tmp_path, settings):
    settings.WORKBOOK_MAX_ZIP_ENTRIES = 5
    parts = MINIMAL | {f"xl/media/{n}.bin": b"x" for n in range(5)}
    assert "at most 5 are accepted" in rejected(write_zip(tmp_path / "many.xlsx", parts)).message


def test_it_refuses_a_zip_bomb_before_opening_it(tmp_path):
    parts = MINIMAL | {"xl/worksheets/sheet1.xml": b"\0" * (20 * 1024 * 1024)}
    error = rejected(write_zip(tmp_path / "bomb.xlsx", parts), deep=False)
    assert error.code == "too_big" and "zip bomb" in error.message


def test_it_caps_each_entry_and_shared_strings(tmp_path, settings):
    settings.WORKBOOK_MAX_SHARED_STRINGS_BYTES = 1000
    parts = MINIMAL | {"xl/sharedStrings.xml": b"<sst>" + b"<si><t>x</t></si>" * 100 + b"</sst>"}
    assert "zip bomb" in rejected(write_zip(tmp_path / "sst.xlsx", parts), deep=False).message
    settings.WORKBOOK_MAX_ENTRY_BYTES = 100
    parts = MINIMAL | {"xl/worksheets/sheet1.xml": bytes(range(256)) * 2}
    assert "zip bomb" in rejected(write_zip(tmp_path / "big.xlsx", parts), deep=False).message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("setpoints.xls", "legacy Excel 97-2003 workbook (.xls)"),
        ("setpoints.xlsb", "Excel binary workbook (.xlsb)"),
        ("setpoints.xlsm", "macro-enabled workbook (.xlsm)"),
        ("setpoints.ods", "OpenDocument spreadsheet (.ods)"),
        ("setpoints.csv", "CSV text file"),
        ("setpoints", "no extension"),
        ("setpoints.pdf", "'.pdf'"),
    ],
)
def test_it_checks_the_extension(name, expected):
    with pytest.raises(WorkbookRejected) as caught:
        check_extension(name)
    assert expected in caught.value.message
    assert "(.xlsx)" in caught.value.message


def test_it_accepts_the_xlsx_extension_in_any_case():
    check_extension("Setpoints.XLSX")


def test_it_insists_on_defusedxml_at_startup(monkeypatch):
    import openpyxl.xml

    config = apps.get_app_config("workbooks")
    config.ready()
    monkeypatch.setattr(openpyxl.xml, "DEFUSEDXML", False)
    with pytest.raises(ImproperlyConfigured, match="defusedxml"):
        config.ready()
