"""The checks an upload passes before any of its XML is parsed: the file
name's extension, then the file itself (magic bytes, the zip directory,
declared and inflated sizes, the kind of package), so a legacy, macro,
encrypted, damaged or zip-bomb file is refused with a message that says
what it is and what to do.

The limits are settings (WORKBOOK_MAX_ZIP_ENTRIES and its neighbours in
fleetops/settings.py); nothing here touches the database.
"""

import zipfile
import zlib
from pathlib import Path

from django.conf import settings

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
SAVE_AS_XLSX = "Open it in Excel or LibreOffice and save it as an Excel Workbook (.xlsx)."


class WorkbookRejected(Exception):
    """The whole file is refused; `message` is shown to the user as is."""

    def __init__(self, message: str, code: str = "rejected"):
        super().__init__(message)
        self.message = message
        self.code = code


EXTENSION_MESSAGES = {
    ".xls": "This is a legacy Excel 97-2003 workbook (.xls), which is not accepted. ",
    ".xlsb": "This is an Excel binary workbook (.xlsb), which is not accepted. ",
    ".xlsm": "This is a macro-enabled workbook (.xlsm); macros are not accepted. ",
    ".ods": "This is an OpenDocument spreadsheet (.ods), which is not accepted. ",
    ".csv": "This is a CSV text file, which is not accepted. ",
}


def check_extension(filename: str) -> None:
    suffix = Path(filename or "").suffix.lower()
    if suffix == ".xlsx":
        return
    if suffix in EXTENSION_MESSAGES:
        raise WorkbookRejected(EXTENSION_MESSAGES[suffix] + SAVE_AS_XLSX, "format")
    raise WorkbookRejected(
        f"Only Excel workbooks (.xlsx) are accepted, not '{suffix or 'no extension'}' files. "
        + SAVE_AS_XLSX,
        "format",
    )


# Pre-checks
# ----------


def _ole2_message(path: Path) -> str:
    # An OLE2 container is either a legacy .xls/.xlsb export or an
    # encrypted OOXML package; the latter names its streams in UTF-16.
    with open(path, "rb") as handle:
        data = handle.read(settings.WORKBOOK_MAX_UPLOAD_BYTES + 1)
    if (
        "EncryptedPackage".encode("utf-16-le") in data
        or "EncryptionInfo".encode("utf-16-le") in data
    ):
        return (
            "This workbook is password protected (encrypted), so it cannot be read. "
            "Remove the password in Excel (File › Info › Protect Workbook) and upload "
            "the .xlsx again."
        )
    return "This is a legacy Excel 97-2003 workbook (.xls), which is not accepted. " + SAVE_AS_XLSX


def precheck(path: Path, *, deep: bool = False) -> None:
    """Refuse anything that is not a sane .xlsx before any XML is parsed.

    The cheap part (magic bytes, the zip directory, declared sizes, the
    kind of package) runs in the upload form; `deep` also inflates every
    entry with a byte counter, which catches truncated archives and zip
    entries that lie about their size, and runs in the task.
    """
    _check_magic(path)
    with _open_package(path) as archive:
        infos = archive.infolist()
        if len(infos) > settings.WORKBOOK_MAX_ZIP_ENTRIES:
            raise WorkbookRejected(
                f"The workbook package holds {len(infos)} parts (at most "
                f"{settings.WORKBOOK_MAX_ZIP_ENTRIES} are accepted).",
                "too_big",
            )
        _check_package_kind(archive, {info.filename for info in infos})
        _check_declared_sizes(infos)
        if deep:
            _inflate_all(archive, infos)


def _check_magic(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise WorkbookRejected("The file is empty.", "empty")
    if head.startswith(OLE2_MAGIC):
        raise WorkbookRejected(_ole2_message(path), "format")
    if not head.startswith(ZIP_MAGICS):
        raise WorkbookRejected(
            "This file is not an Excel workbook (an .xlsx file is a zip package; this one "
            "is not). " + SAVE_AS_XLSX,
            "format",
        )


def _open_package(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise WorkbookRejected(
            "The workbook is damaged or truncated (its zip package cannot be opened). "
            "Save it again from Excel or LibreOffice as .xlsx and upload the new file.",
            "corrupt",
        ) from exc


def _entry_limit(info: zipfile.ZipInfo) -> int:
    # The shared strings of a large sheet legitimately dwarf every other part
    # but the sheet itself, so they have a cap of their own.
    if info.filename == "xl/sharedStrings.xml":
        return settings.WORKBOOK_MAX_SHARED_STRINGS_BYTES
    return settings.WORKBOOK_MAX_ENTRY_BYTES


def _check_declared_sizes(infos: list[zipfile.ZipInfo]) -> None:
    """The sizes the zip directory declares; `_inflate_all` checks they hold."""
    max_total = settings.WORKBOOK_MAX_UNCOMPRESSED_BYTES
    max_ratio = settings.WORKBOOK_MAX_COMPRESSION_RATIO
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if (
            info.file_size > _entry_limit(info)
            or total > max_total
            or (info.file_size > 1024 * 1024 and ratio > max_ratio)
        ):
            raise WorkbookRejected(
                "The workbook expands to far more data than a setpoint sheet needs "
                f"(part {info.filename[:80]!r}); it is refused as a possible zip bomb.",
                "too_big",
            )


def _check_package_kind(archive: zipfile.ZipFile, names: set[str]) -> None:
    if "mimetype" in names:
        mimetype = archive.read("mimetype")[:100]
        if b"opendocument" in mimetype:
            raise WorkbookRejected(EXTENSION_MESSAGES[".ods"] + SAVE_AS_XLSX, "format")
    if "xl/workbook.bin" in names:
        raise WorkbookRejected(EXTENSION_MESSAGES[".xlsb"] + SAVE_AS_XLSX, "format")
    content_types = b""
    if "[Content_Types].xml" in names:
        info = archive.getinfo("[Content_Types].xml")
        if info.file_size < 1024 * 1024:
            content_types = archive.read(info)
    if "xl/vbaProject.bin" in names or b"macroEnabled" in content_types:
        raise WorkbookRejected(EXTENSION_MESSAGES[".xlsm"] + SAVE_AS_XLSX, "format")
    if "xl/workbook.xml" not in names:
        raise WorkbookRejected(
            "This zip file is not an Excel workbook (it has no xl/workbook.xml part). "
            + SAVE_AS_XLSX,
            "format",
        )


def _inflate_all(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        limit = _entry_limit(info)
        seen = 0
        try:
            with archive.open(info) as stream:
                while chunk := stream.read(1024 * 1024):
                    seen += len(chunk)
                    if seen > limit:
                        raise WorkbookRejected(
                            "The workbook expands to far more data than it declares; it is "
                            "refused as a possible zip bomb.",
                            "too_big",
                        )
        except WorkbookRejected:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            NotImplementedError,
            RuntimeError,
            ValueError,
        ) as exc:
            raise WorkbookRejected(
                "The workbook is damaged or truncated (a part of its zip package cannot be "
                "read). Save it again from Excel or LibreOffice as .xlsx and upload the new file.",
                "corrupt",
            ) from exc
