"""Workbooks the product writes (openpyxl): the upload template and the
error report.

Every string goes out as a text cell. openpyxl would store a string that
starts with "=" as a formula, and Excel re-evaluates "+", "-", "@", tab or
CR prefixed text once someone edits the cell; so such strings are forced
to the string type and given Excel's quote prefix (the hidden apostrophe).
"""

import io
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

from openpyxl import Workbook
from openpyxl.cell import Cell, WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.datavalidation import DataValidation

from apps.plant.models import Machine
from apps.plant.validators import TARGET_SPEED_MAX, TARGET_SPEED_MIN
from fleetops.xlsx import FORMULA_PREFIXES, is_plain_text, text_cell

from . import parsing

INVALID_FILL = PatternFill("solid", fgColor="FFC7CE")
WARNING_FILL = PatternFill("solid", fgColor="FFEB9C")
BOLD = Font(bold=True)
TEMPLATE_ROWS = 1000  # rows the data validation covers beyond the pre-filled ones
PROGRESS_ROWS = 1000  # rows between two progress calls of the error report


def _plain(value):
    """What a value read from an upload is written back as."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime | date | time | timedelta):
        return value
    return str(value)


class _ReportCells:
    """The report's cells, built as cheaply as openpyxl allows.

    A value that openpyxl writes exactly as text_cell would (a number, a
    date, a string no spreadsheet reads as a formula or an error code) is
    appended as the plain value: a WriteOnlyCell costs ~5x more to write.
    Anything else becomes a cell, whose style (fill, quote prefix) is made
    once per combination and then copied, not looked up again per cell.
    """

    def __init__(self, ws):
        self.ws = ws
        self._styles: dict[tuple, object] = {}

    def value(self, value, fill=None):
        value = _plain(value)
        text = isinstance(value, str)
        if fill is None and (not text or is_plain_text(value)):
            return value
        quote = text and value.startswith(FORMULA_PREFIXES)
        key = (id(fill), quote)
        style = self._styles.get(key)
        if style is None:
            proto = WriteOnlyCell(self.ws)
            if fill is not None:
                proto.fill = fill
            if quote:
                proto.quotePrefix = True
            # openpyxl's own worksheet copy shares styles this way.
            style = self._styles[key] = proto._style
        cell = Cell(self.ws, column=1, row=1, style_array=style)
        if text:
            cell.value = value
            cell.data_type = "s"  # text_cell: never a formula or an error
        else:
            cell.value = value
        return cell


def _save(workbook: Workbook) -> bytes:
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def template_workbook(*, machines) -> bytes:
    workbook = Workbook()
    ws = workbook.active
    ws.title = "Setpoints"
    headers = ["Machine ID", "Target Speed", "Mode", "Machine name", "Line"]
    for column, title in enumerate(headers, start=1):
        text_cell(ws.cell(row=1, column=column), title).font = BOLD
    count = 0
    for count, machine in enumerate(machines, start=1):
        row = count + 1
        text_cell(ws.cell(row=row, column=1), machine.code)
        if machine.target_speed is not None:
            ws.cell(row=row, column=2, value=int(round(machine.target_speed)))
        if machine.mode:
            text_cell(ws.cell(row=row, column=3), machine.mode)
        text_cell(ws.cell(row=row, column=4), machine.name)
        text_cell(ws.cell(row=row, column=5), f"line:{machine.line.code}")
    last = count + 1 + TEMPLATE_ROWS
    # The drop-down and the instructions offer what the row rules accept.
    modes = ", ".join(Machine.Mode.values)

    speed = DataValidation(
        type="whole",
        operator="between",
        formula1=str(TARGET_SPEED_MIN),
        formula2=str(TARGET_SPEED_MAX),
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Target Speed",
        error=f"A whole number from {TARGET_SPEED_MIN} to {TARGET_SPEED_MAX}.",
    )
    mode = DataValidation(
        type="list",
        formula1='"' + ",".join(Machine.Mode.values) + '"',
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Mode",
        error=f"One of {modes}, or empty.",
    )
    ws.add_data_validation(speed)
    ws.add_data_validation(mode)
    speed.add(f"B2:B{last}")
    mode.add(f"C2:C{last}")
    ws.freeze_panes = "A2"
    for letter, width in zip("ABCDE", (14, 14, 14, 28, 10), strict=True):
        ws.column_dimensions[letter].width = width

    info = workbook.create_sheet("Instructions")
    lines = [
        "FleetOps Live setpoint workbook",
        "",
        "1. Fill in the Setpoints sheet: one row per machine.",
        "2. Machine ID (required): the machine code, e.g. m:401. Only machines of lines "
        "you operate are accepted.",
        f"3. Target Speed (required): a whole number from {TARGET_SPEED_MIN} "
        f"to {TARGET_SPEED_MAX}.",
        f"4. Mode (optional): {modes}; leave empty to keep the current mode.",
        "5. Machine name and Line are for reference and are ignored on upload.",
        "6. Keep the header row. A machine listed twice: the last row is used.",
        "7. Save as Excel Workbook (.xlsx) and upload it on the Workbooks page. "
        "Use 'Validate only' to check the file without changing any setpoint.",
    ]
    for number, line in enumerate(lines, start=1):
        text_cell(info.cell(row=number, column=1), line)
    info["A1"].font = BOLD
    info.column_dimensions["A"].width = 100
    return _save(workbook)


def error_report_workbook(*, path, index: parsing.MachineIndex) -> bytes:
    """The error report as bytes (see `error_report_write`)."""
    buffer = io.BytesIO()
    error_report_write(path=path, index=index, target=buffer)
    return buffer.getvalue()


def error_report_write(
    *,
    path,
    index: parsing.MachineIndex,
    target,
    on_progress: Callable[[int], None] | None = None,
    on_row: Callable[[], None] | None = None,
) -> int:
    """Write the report of the workbook at `path` to `target` (a path or a
    binary file): the uploaded rows, each with its status and messages,
    invalid cells red, warned cells yellow. Returns the rows written.

    Written in write-only mode from a streaming check of the file, so a
    large upload never sits in memory whole. `on_progress(rows_written)` is
    called every PROGRESS_ROWS rows, `on_row()` after every row read (a
    heartbeat, throttled by the caller).
    """
    header, results = parsing.iter_row_results(path, index=index, on_row=on_row)
    workbook = Workbook(write_only=True)
    ws = workbook.create_sheet("Report")
    cells = _ReportCells(ws)
    value = cells.value
    ws.append(
        [value("Row")]
        + [value(title) for title in header.titles]
        + [value("Status"), value("Messages")]
    )
    letters = [parsing.get_column_letter(i + 1) for i in range(header.width)]
    written = 0
    for number, values, errors, warnings, status in results:
        row = [number]
        if errors or warnings:
            bad = {e["column"] for e in errors}
            warned = {w["column"] for w in warnings}
            for i, letter in enumerate(letters):
                fill = INVALID_FILL if letter in bad else WARNING_FILL if letter in warned else None
                row.append(value(values[i] if i < len(values) else None, fill))
            messages = [f"{e['column']}{number}: {e['message']}" for e in errors]
            messages += [f"{w['column']}{number}: {w['message']} (warning)" for w in warnings]
            row.append(value(status, INVALID_FILL if errors else None))
            row.append(value("\n".join(messages)))
        else:
            row += [value(values[i] if i < len(values) else None) for i in range(len(letters))]
            row += [status, ""]
        ws.append(row)
        written += 1
        if on_progress is not None and written % PROGRESS_ROWS == 0:
            on_progress(written)
    workbook.save(target)
    return written
