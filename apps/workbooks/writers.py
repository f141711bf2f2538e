"""Workbooks the product writes (openpyxl): the upload template and the
error report.

Every string goes out as a text cell. openpyxl would store a string that
starts with "=" as a formula, and Excel re-evaluates "+", "-", "@", tab or
CR prefixed text once someone edits the cell; so such strings are forced
to the string type and given Excel's quote prefix (the hidden apostrophe).
"""

import io
from datetime import date, datetime, time, timedelta

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.datavalidation import DataValidation

from fleetops.xlsx import text_cell

from . import parsing

INVALID_FILL = PatternFill("solid", fgColor="FFC7CE")
WARNING_FILL = PatternFill("solid", fgColor="FFEB9C")
BOLD = Font(bold=True)
TEMPLATE_ROWS = 1000  # rows the data validation covers beyond the pre-filled ones


def _plain(value):
    """What a value read from an upload is written back as."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime | date | time | timedelta):
        return value
    return str(value)


def _cell(ws, value, fill=None):
    cell = WriteOnlyCell(ws)
    value = _plain(value)
    if isinstance(value, str):
        text_cell(cell, value)
    else:
        cell.value = value
    if fill is not None:
        cell.fill = fill
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

    speed = DataValidation(
        type="whole",
        operator="between",
        formula1=str(parsing.TARGET_SPEED_MIN),
        formula2=str(parsing.TARGET_SPEED_MAX),
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Target Speed",
        error=f"A whole number from {parsing.TARGET_SPEED_MIN} to {parsing.TARGET_SPEED_MAX}.",
    )
    mode = DataValidation(
        type="list",
        formula1='"' + ",".join(parsing.MODES) + '"',
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Mode",
        error="One of " + ", ".join(parsing.MODES) + ", or empty.",
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
        f"3. Target Speed (required): a whole number from {parsing.TARGET_SPEED_MIN} "
        f"to {parsing.TARGET_SPEED_MAX}.",
        "4. Mode (optional): " + ", ".join(parsing.MODES) + "; leave empty to keep the "
        "current mode.",
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
    """The uploaded rows, each with its status and messages; invalid cells red.

    Written in write-only mode from a streaming check of the file, so a
    large upload never sits in memory whole.
    """
    header, results = parsing.iter_row_results(path, index=index)
    workbook = Workbook(write_only=True)
    ws = workbook.create_sheet("Report")
    ws.append(
        [_cell(ws, "Row")]
        + [_cell(ws, value) for value in header.titles]
        + [_cell(ws, "Status"), _cell(ws, "Messages")]
    )
    for number, values, errors, warnings, status in results:
        bad = {e["column"] for e in errors}
        warned = {w["column"] for w in warnings}
        cells = [_cell(ws, number)]
        for index_ in range(header.width):
            letter = parsing.get_column_letter(index_ + 1)
            value = values[index_] if index_ < len(values) else None
            fill = INVALID_FILL if letter in bad else WARNING_FILL if letter in warned else None
            cells.append(_cell(ws, value, fill))
        messages = [f"{e['column']}{number}: {e['message']}" for e in errors]
        messages += [f"{w['column']}{number}: {w['message']} (warning)" for w in warnings]
        cells.append(_cell(ws, status, INVALID_FILL if errors else None))
        cells.append(_cell(ws, "\n".join(messages)))
        ws.append(cells)
    return _save(workbook)
