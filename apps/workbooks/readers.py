"""Rows of the first worksheet of an .xlsx, from python-calamine when that is
safe and from openpyxl read-only otherwise, behind one interface:

    with open_rows(path) as sheet:
        sheet.title, sheet.estimate
        for number, values in sheet.rows: ...   # Excel row number, cell values

`values` holds the cells from column A (numbers as int/float, text as str,
blanks as None, formula cells as their cached values, dates as datetime;
sheets with error cells go to openpyxl, which reads them as "#DIV/0!"), at
most `MAX_COLUMNS` of them; blank rows are skipped.

Why a guard: calamine materialises the sheet as a dense range from its first
to its last cell, so a 5 KB workbook with one cell at XFD1048576 makes it
allocate ~512 GB and *abort* the process (a Rust OOM cannot be caught).
Before calamine sees a file, `calamine_verdict` stream-scans *every* part of
the package (whichever part calamine ends up reading has been scanned):
every cell tag must be in the canonical form `<c r="A1"` (counted against
anything that could open a cell element), and the farthest reference, and
`<dimension ref>`, must keep the dense range small (rows, columns and
rows x columns under caps). Anything else goes to openpyxl, which streams
rows and stays flat in memory however far cells are spread.
"""

import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import itemgetter

from openpyxl.utils import column_index_from_string

from .parsing import MAX_COLUMNS, _blank
from .precheck import WorkbookRejected

# The guard's caps. calamine stores ~32 bytes per cell of the dense range
# (plus the cells it parsed), so 2M cells stay far below the 200 MB budget.
CALAMINE_MAX_ROWS = 1_048_576
CALAMINE_MAX_COLUMNS = 256
CALAMINE_MAX_CELLS = 2_000_000
SCAN_CHUNK = 1024 * 1024
SCAN_MAX_CARRY = 1024 * 1024

# Every way an element named c (with or without a namespace prefix) can open
# a tag: "<c" or ":c" followed by a space, tab, newline, CR, ">" or "/";
# counted with bytes.count, so anything looking like one counts. One pass:
# the five other characters that can end the name are first mapped to a
# space, so counting "<c " and ":c " counts all twelve forms (nothing else
# maps to a space).
CELL_TAG_STARTS = (b"<c ", b":c ")
TAG_END_TO_SPACE = bytes.maketrans(b"\t\n\r>/", b"     ")
# The cell tag as Excel, LibreOffice and openpyxl write it: r="A1" first.
# Any cell tag not in this form (no r, a prefix, quotes, lower case, $)
# makes the counts differ, and the file goes to openpyxl.
CELL_REF_RE = re.compile(rb'<c r="([A-Z]{1,3})([1-9][0-9]{0,6})"[\s/>]')
DIMENSION_RE = re.compile(
    rb"""<(?:[A-Za-z_][\w.-]*:)?dimension\s[^>]*?ref\s*=\s*["']([^"']*)["']"""
)
RANGE_CELL_RE = re.compile(rb"\$?([A-Za-z]{1,3})\$?(\d{1,7})")
# t="e": an error cell (#DIV/0!...), which calamine reads as an empty string
# and openpyxl as the error text the user sees; t="d": an ISO date cell,
# which openpyxl reads as a date where calamine's serial dates need a
# datetime. Sheets holding either go to openpyxl.
ODD_TOKENS = (b'"e"', b"'e'", b'"d"', b"'d'")
UTF16_STARTS = (b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<")

CORRUPT_SHEET = (
    "The worksheet could not be read to the end: the workbook is damaged. Save it "
    "again from Excel or LibreOffice as .xlsx and upload the new file."
)
CORRUPT_BOOK = (
    "The workbook could not be read: it is damaged or was not saved by Excel or "
    "LibreOffice. Save it again as .xlsx and upload the new file."
)


# The guard
# ---------


@dataclass
class Extent:
    """What a scan of the package found (the max over every part)."""

    cell_tags: int = 0
    cell_refs: int = 0
    max_row: int = 0
    max_column: int = 0
    odd_cells: int = 0
    problem: str = ""  # set when the scan itself says "do not trust"

    def see(self, letters: bytes, digits: bytes) -> None:
        row = int(digits)
        column = column_index_from_string(letters.decode().upper())
        if row > self.max_row:
            self.max_row = row
        if column > self.max_column:
            self.max_column = column


def scan_part(stream, extent: Extent) -> None:
    """Count cell tags and references of one part, a chunk at a time."""
    carry = b""
    first = True
    while True:
        chunk = stream.read(SCAN_CHUNK)
        if first:
            first = False
            if chunk.lstrip(b" \t\r\n").startswith(UTF16_STARTS) or chunk.startswith(UTF16_STARTS):
                extent.problem = "utf-16 part"
                return
        if not chunk:
            _scan_bytes(carry, extent)
            return
        data = carry + chunk
        # Cut after the last '>': a cell tag's start and its r="A1" hold
        # none, so no match is ever split between two pieces.
        cut = data.rfind(b">") + 1
        if cut == 0:
            if len(data) > SCAN_MAX_CARRY:
                extent.problem = "no tag end in a long stretch"
                return
            carry = data
            continue
        _scan_bytes(data[:cut], extent)
        carry = data[cut:]


def _scan_bytes(data: bytes, extent: Extent) -> None:
    if not data:
        return
    spaced = data.translate(TAG_END_TO_SPACE)
    extent.cell_tags += sum(spaced.count(start) for start in CELL_TAG_STARTS)
    refs = CELL_REF_RE.findall(data)
    extent.cell_refs += len(refs)
    if refs:
        # A few distinct column letters; one int per row number.
        widest = max({letters for letters, _ in refs}, key=lambda x: (len(x), x))
        extent.see(widest, b"1")
        extent.see(b"A", str(max(map(int, map(itemgetter(1), refs)))).encode())
    # Conservative: any such attribute value, in any element, counts.
    extent.odd_cells += sum(data.count(token) for token in ODD_TOKENS)
    if b"dimension" in data:
        for ref in DIMENSION_RE.findall(data):
            cells = RANGE_CELL_RE.findall(ref)
            if not cells:
                extent.problem = "unreadable dimension"
            for letters, digits in cells:
                extent.see(letters, digits)


def scan_package(path) -> Extent:
    """Scan every part: the sheet calamine reads is one of them, whatever
    the workbook's relationships say."""
    extent = Extent()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            with archive.open(info) as stream:
                scan_part(stream, extent)
            if extent.problem:
                break
    return extent


def calamine_verdict(extent: Extent) -> tuple[bool, str]:
    """(calamine allowed, why): the guard's rule on a scanned package."""
    if extent.problem:
        return False, extent.problem
    if extent.cell_refs != extent.cell_tags:
        return False, f"{extent.cell_tags} cell tags but {extent.cell_refs} plain references"
    if extent.odd_cells:
        return False, f"{extent.odd_cells} error or ISO date cells"
    if extent.max_row > CALAMINE_MAX_ROWS:
        return False, f"row {extent.max_row} is beyond Excel's last row"
    if extent.max_column > CALAMINE_MAX_COLUMNS:
        return False, f"column {extent.max_column} > {CALAMINE_MAX_COLUMNS}"
    cells = extent.max_row * extent.max_column
    if cells > CALAMINE_MAX_CELLS:
        return False, f"{extent.max_row} rows x {extent.max_column} columns > {CALAMINE_MAX_CELLS}"
    return True, f"{extent.max_row} rows x {extent.max_column} columns"


def calamine_allowed(path) -> tuple[bool, str]:
    try:
        return calamine_verdict(scan_package(path))
    except Exception as exc:  # a damaged zip: openpyxl gives the user's message
        return False, f"scan failed: {type(exc).__name__}"


# The interface
# -------------


@dataclass
class SheetRows:
    title: str
    estimate: int | None  # last row number the sheet declares, if any
    rows: Iterator[tuple[int, tuple]]
    engine: str  # "calamine" or "openpyxl"
    why: str = ""  # the guard's reason
    _close: list = field(default_factory=list)

    def close(self) -> None:
        while self._close:
            self._close.pop()()

    def __enter__(self) -> "SheetRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_rows(path, *, engine: str = "auto") -> SheetRows:
    """The first worksheet's non-blank rows; raises WorkbookRejected.

    engine: "auto" (calamine when the guard allows it), "openpyxl", or
    "calamine" (still guarded: refused files go to openpyxl)."""
    why = "openpyxl requested"
    if engine != "openpyxl":
        allowed, why = calamine_allowed(path)
        if allowed:
            opened = _open_calamine(path)
            if opened is not None:
                opened.why = why
                return opened
            why = "calamine could not open it"
    opened = _open_openpyxl(path)
    opened.why = why
    return opened


# openpyxl
# --------


def _open_openpyxl(path) -> SheetRows:
    from openpyxl import load_workbook

    try:
        with warnings.catch_warnings():
            # Foreign files trigger openpyxl's "no default style" chatter.
            warnings.simplefilter("ignore")
            workbook = load_workbook(path, read_only=True, data_only=True, keep_links=False)
    except WorkbookRejected:
        raise
    except Exception as exc:  # openpyxl raises anything from KeyError to XML errors
        raise WorkbookRejected(CORRUPT_BOOK, "corrupt") from exc
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    sheets = [ws for ws in workbook.worksheets if isinstance(ws, ReadOnlyWorksheet)]
    if not sheets:
        workbook.close()
        raise WorkbookRejected("Invalid Template: the workbook has no worksheet.", "template")
    sheet = sheets[0]
    estimate = sheet.max_row if isinstance(sheet.max_row, int) else None
    # Declared dimensions can lie; never pad rows out to them.
    sheet.reset_dimensions()
    return SheetRows(
        title=sheet.title,
        estimate=estimate,
        rows=_openpyxl_rows(sheet),
        engine="openpyxl",
        _close=[workbook.close],
    )


def _openpyxl_rows(sheet) -> Iterator[tuple[int, tuple]]:
    """openpyxl fills a gap between rows with one shared empty tuple per
    missing row; recognising it by identity keeps a sheet with a lone cell
    at row 1048576 from costing a million blank-row checks."""
    gap_filler = None
    try:
        for number, values in enumerate(
            sheet.iter_rows(min_col=1, max_col=MAX_COLUMNS, values_only=True), start=1
        ):
            if values is gap_filler:
                continue
            if all(_blank(v) for v in values):
                gap_filler = values
                continue
            yield number, values
    except WorkbookRejected:
        raise
    except Exception as exc:
        raise WorkbookRejected(CORRUPT_SHEET, "corrupt") from exc


# calamine
# --------


def first_worksheet_name(path) -> str | None:
    """The sheet openpyxl reads first, found the way openpyxl finds it (its
    workbook parser, chartsheets and missing parts skipped); None when the
    package is unusual enough that calamine might disagree."""
    from openpyxl.packaging.manifest import Manifest
    from openpyxl.reader.excel import _find_workbook_part
    from openpyxl.reader.workbook import WorkbookParser
    from openpyxl.xml.functions import fromstring

    with zipfile.ZipFile(path) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl's chatter about foreign files
        manifest = Manifest.from_tree(fromstring(archive.read("[Content_Types].xml")))
        if _find_workbook_part(manifest).PartName != "/xl/workbook.xml":
            return None
        parser = WorkbookParser(archive, "xl/workbook.xml", keep_links=False)
        parser.parse()
        names = set(archive.namelist())
        for sheet, rel in parser.find_sheets():
            if rel.target not in names:
                continue
            if "chartsheet" in rel.Type:
                continue
            return sheet.name
    return None


def _open_calamine(path) -> SheetRows | None:
    """None when calamine cannot read the file or disagrees about its first
    sheet: openpyxl then decides (and words the rejection as before)."""
    try:
        from python_calamine import CalamineWorkbook, SheetTypeEnum

        title = first_worksheet_name(path)
        if title is None:
            return None
        workbook = CalamineWorkbook.from_path(str(path))
        try:
            kinds = {m.name: m.typ for m in workbook.sheets_metadata}
            if kinds.get(title) != SheetTypeEnum.WorkSheet:
                workbook.close()
                return None
            sheet = workbook.get_sheet_by_name(title)
        except BaseException:
            workbook.close()
            raise
    except BaseException as exc:
        _reraise_unless_reader_error(exc)
        return None
    end = sheet.end
    return SheetRows(
        title=title,
        estimate=end[0] + 1 if end else None,
        rows=_calamine_rows(sheet),
        engine="calamine",
        _close=[workbook.close],
    )


def _reraise_unless_reader_error(exc: BaseException) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded | WorkbookRejected):
        raise exc
    # A Rust panic surfaces as pyo3's PanicException, a BaseException.
    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
        raise exc


_MAX_EXACT = 2**53


def _calamine_rows(sheet) -> Iterator[tuple[int, tuple]]:
    """Rows as openpyxl gives them. calamine's `iter_rows` pads the empty
    rows above the first cell but starts each row at the first non-empty
    *column* (`sheet.start[1]`), so columns are shifted back into place.
    Every number is a float in calamine; a whole one is an int, as openpyxl
    reads Excel's "1500"; a date is a datetime, as openpyxl reads a
    date-formatted serial number."""
    start = sheet.start
    if start is None:
        return
    lead = (None,) * min(start[1], MAX_COLUMNS)
    keep = max(MAX_COLUMNS - start[1], 0)
    try:
        for index, row in enumerate(sheet.iter_rows()):
            values = lead + tuple(map(_value, row[:keep]))
            # A plain loop, not all(genexpr): this runs once per row.
            for v in values:
                if v is not None and (type(v) is not str or v.strip()):
                    yield index + 1, values
                    break
    except WorkbookRejected:
        raise
    except BaseException as exc:
        _reraise_unless_reader_error(exc)
        raise WorkbookRejected(CORRUPT_SHEET, "corrupt") from exc


def _value(value):
    kind = type(value)
    if kind is str:
        return value if value else None
    if kind is float:
        if value.is_integer() and -_MAX_EXACT <= value <= _MAX_EXACT:
            return int(value)
        return value
    if kind is date:
        return datetime(value.year, value.month, value.day)
    return value
