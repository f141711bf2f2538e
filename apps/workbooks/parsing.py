"""Reading an uploaded setpoint workbook: the header, casting and validation
of every row, and the ParsedBatch the control layer is fed with. The file
itself is checked first, in `precheck`.

Reader choice (`readers.open_rows`): python-calamine (~250K rows/s) when a
stream scan of the package shows the sheet's farthest cell keeps
calamine's dense range small, openpyxl read-only (streaming SAX over
defusedxml, ~6K rows/s) otherwise. calamine materialises the whole sheet
as a dense range: a 5 KB workbook with one cell at XFD1048576 would make
it allocate 512 GB and *abort* the worker (a Rust OOM, not a catchable
exception), so such files never reach it. Both read formula cells through
their cached values and give the same values and Excel row numbers.

Nothing here touches the database except through `plant` selectors and the
`MachineIndex`, so the rules are tested on workbooks built in the tests.
"""

import math
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from openpyxl.utils import get_column_letter

from apps.plant import validators as plant_validators
from apps.plant.models import MACHINE_CODE_RE

from .precheck import WorkbookRejected

REQUIRED_COLUMNS = ("Machine ID", "Target Speed")
OPTIONAL_COLUMNS = ("Mode",)
MACHINE_ID_RE = re.compile(MACHINE_CODE_RE)
HEADER_SEARCH_ROWS = 10
# Columns beyond this are never read: extra columns are ignored anyway,
# and a row padded to column XFD would cost 16K cells per row.
MAX_COLUMNS = 64
CHUNK_ROWS = 500


# Reading rows
# ------------


@dataclass
class Header:
    row: int
    sheet: str
    columns: dict[str, int]  # canonical column name -> 0-based index
    width: int  # cells of the header row, up to MAX_COLUMNS
    titles: tuple = ()  # the header cells as the user wrote them

    def letter(self, name: str) -> str:
        return get_column_letter(self.columns[name] + 1)


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def find_header(rows: Iterator[tuple[int, tuple]], sheet_name: str) -> Header:
    for number, values in rows:
        if number > HEADER_SEARCH_ROWS:
            break
        found: dict[str, int] = {}
        wanted = {name.casefold(): name for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        for index, value in enumerate(values):
            if isinstance(value, str):
                name = wanted.get(value.strip().casefold())
                if name and name not in found:
                    found[name] = index
        missing = [name for name in REQUIRED_COLUMNS if name not in found]
        if missing:
            raise WorkbookRejected(
                f"Invalid Template: the header (row {number} of sheet {sheet_name!r}) lacks "
                f"the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}. "
                "Download the template and keep its header row.",
                "template",
            )
        width = max(i for i, v in enumerate(values) if not _blank(v)) + 1
        return Header(
            row=number, sheet=sheet_name, columns=found, width=width, titles=values[:width]
        )
    raise WorkbookRejected(
        f"Invalid Template: no header row in the first {HEADER_SEARCH_ROWS} rows of sheet "
        f"{sheet_name!r}. The header must name the columns Machine ID and Target Speed.",
        "template",
    )


# One row
# -------


def _shown(value, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class MachineIndex:
    """What the validator needs to know about the plant, loaded once."""

    line_by_machine: dict[str, str]  # machine code -> line code
    operated_lines: set[str]
    # machine code -> critical status: control refuses setpoints for these.
    in_safety_state: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_user(cls, user) -> "MachineIndex":
        from apps.plant import selectors as plant
        from apps.plant.models import Line, Machine, machine_display_status

        operated_ids = plant.operated_line_ids(user=user)
        critical = plant.critical_status_codes()
        line_by_machine, in_safety_state = {}, {}
        # Plain rows: the whole plant is read for every upload, and model
        # instances (a machine and its line each) were most of the cost.
        for code, line_code, status, locked_at in Machine.objects.values_list(
            "code", "line__code", "status", "maintenance_locked_at"
        ):
            line_by_machine[code] = line_code
            shown = machine_display_status(status, locked_at)
            if shown in critical:
                in_safety_state[code] = shown
        return cls(
            line_by_machine=line_by_machine,
            operated_lines=set(
                Line.objects.filter(id__in=operated_ids).values_list("code", flat=True)
            ),
            in_safety_state=in_safety_state,
        )


@dataclass
class RowResult:
    row: int
    machine: str | None  # a well-formed machine id, even when the row is invalid
    change: dict[str, object] | None  # set when the row is valid
    errors: list[dict]
    warnings: list[dict]


def cast_target_speed(value) -> tuple[int | None, str | None, str | None]:
    """(speed, error, warning) for one Target Speed cell; the rule itself is
    the plant's (`plant.validators.target_speed_clean`), shared with the form."""
    if (
        type(value) is int
        and plant_validators.TARGET_SPEED_MIN <= value <= plant_validators.TARGET_SPEED_MAX
    ):
        return value, None, None  # the common case, answered first
    try:
        number = plant_validators.target_speed_clean(value, label="Target Speed")
    except ValidationError as exc:
        return None, exc.messages[0], None
    warning = None
    if isinstance(value, str):
        warning = f"Target Speed {_shown(value.strip())!r} was stored as text; read as a number."
    return number, None, warning


class RowValidator:
    """Checks rows of one sheet: the header's columns and letters are looked
    up once, not per row (a 100,000-row sheet calls this 100,000 times)."""

    def __init__(self, header: Header, index: MachineIndex):
        self.index = index
        self.id_column = header.columns["Machine ID"]
        self.speed_column = header.columns["Target Speed"]
        self.mode_column = header.columns.get("Mode")
        self.id_letter = header.letter("Machine ID")
        self.speed_letter = header.letter("Target Speed")
        self.mode_letter = header.letter("Mode") if self.mode_column is not None else ""

    def __call__(self, number: int, values: tuple) -> RowResult:
        width = len(values)
        raw_id = values[self.id_column] if self.id_column < width else None
        errors: list[dict] = []
        warnings: list[dict] = []
        machine = None
        if _blank(raw_id):
            errors.append(_message(number, self.id_letter, "Machine ID is empty."))
        else:
            code = str(raw_id).strip()
            if not isinstance(raw_id, str) or not MACHINE_ID_RE.match(code):
                errors.append(
                    _message(
                        number,
                        self.id_letter,
                        f"Machine ID must look like m:401, not {_shown(code)!r}.",
                    )
                )
            else:
                machine = code
                if problem := self._machine_problem(code):
                    errors.append(_message(number, self.id_letter, problem))

        raw_speed = values[self.speed_column] if self.speed_column < width else None
        speed, speed_error, speed_warning = cast_target_speed(raw_speed)
        if speed_error:
            errors.append(_message(number, self.speed_letter, speed_error))
        if speed_warning:
            warnings.append(_message(number, self.speed_letter, speed_warning))

        mode = None
        column = self.mode_column
        raw_mode = values[column] if column is not None and column < width else None
        if not _blank(raw_mode):
            try:
                mode = plant_validators.mode_clean(raw_mode)
            except ValidationError as exc:
                errors.append(_message(number, self.mode_letter, exc.messages[0]))

        change = None
        if not errors:
            change = {"target_speed": speed}
            if mode:
                change["mode"] = mode
        return RowResult(number, machine, change, errors, warnings)

    def _machine_problem(self, code: str) -> str | None:
        index = self.index
        line = index.line_by_machine.get(code)
        if line is None:
            return f"Machine {code} does not exist."
        if line not in index.operated_lines:
            return f"You do not operate line {line} (machine {code})."
        if code in index.in_safety_state:
            return (
                f"Machine {code} is in {index.in_safety_state[code]}; setpoints are "
                "refused until it leaves that state."
            )
        return None


def _message(row: int, column: str, text: str) -> dict:
    return {"row": row, "column": column, "message": text}


# The batch
# ---------


@dataclass
class ParsedBatch:
    tx_id: uuid.UUID = field(default_factory=uuid.uuid4)
    valid_rows: dict[str, dict[str, object]] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)
    header_row: int = 0
    sheet: str = ""
    rows_total: int = 0
    # machine code -> Excel row of every valid row kept in valid_rows.
    row_of_machine: dict[str, int] = field(default_factory=dict)
    # False when errors or warnings were cut at max_messages.
    complete: bool = True


ProgressCallback = Callable[[int, int | None], None]


def parse_workbook(
    path: Path,
    *,
    index: MachineIndex,
    on_chunk: ProgressCallback | None = None,
    on_row: Callable[[], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    max_messages: int | None = None,
) -> ParsedBatch:
    """Parse and validate every row; raises WorkbookRejected for the file.

    `on_chunk(rows_done, rows_estimate)` is called every `chunk_rows`
    data rows and once at the end, so the caller can save progress;
    `on_row()` after every row read, so the caller's heartbeat goes on
    while rows come slowly (it throttles itself). Only
    the first `max_messages` errors and warnings are kept (the summary
    counts them all), so memory does not grow with a file full of them.
    """
    # Far above one row per machine of any plant; it bounds the parse (~2 s)
    # and the error report (written by its own task, ~9 s) of the largest
    # accepted sheet, while a 10 MB upload could hold millions of rows.
    max_rows = settings.WORKBOOK_MAX_ROWS
    from .readers import open_rows

    sheet = open_rows(path)
    try:
        rows = sheet.rows
        header = find_header(rows, sheet.title)
        estimate = max(sheet.estimate - header.row, 0) if sheet.estimate else None
        batch = ParsedBatch(header_row=header.row, sheet=sheet.title)
        validate = RowValidator(header, index)
        last_row: dict[str, int] = {}  # machine -> row of its latest occurrence
        invalid = done = warned = errored = 0
        room = max_messages if max_messages is not None else math.inf

        def note(target: list, items: list) -> None:
            if len(target) < room:
                target.extend(items[: int(min(room - len(target), len(items)))])

        for number, values in rows:
            if on_row:
                on_row()
            done += 1
            if done > max_rows:
                raise WorkbookRejected(
                    f"The sheet has more than {max_rows:,} rows; split it into several "
                    f"workbooks of at most {max_rows:,} rows each.",
                    "too_big",
                )
            result = validate(number, values)
            if result.machine is not None:
                earlier = last_row.get(result.machine)
                if earlier is not None:
                    batch.valid_rows.pop(result.machine, None)
                    batch.row_of_machine.pop(result.machine, None)
                    # Counted always, written only while there is room: a
                    # sheet listing each machine 100 times has 99 % of them.
                    warned += 1
                    if len(batch.warnings) < room:
                        batch.warnings.append(duplicate_warning(header, earlier, number, result))
                last_row[result.machine] = number
            if result.warnings:
                warned += len(result.warnings)
                note(batch.warnings, result.warnings)
            if result.errors:
                invalid += 1
                errored += len(result.errors)
                note(batch.errors, result.errors)
            else:
                batch.valid_rows[result.machine] = result.change
                batch.row_of_machine[result.machine] = number
            if on_chunk and done % chunk_rows == 0:
                on_chunk(done, estimate)
        batch.rows_total = done
        batch.summary = {
            "total": done,
            "valid": len(batch.valid_rows),
            "invalid": invalid,
            "warnings": warned,
        }
        batch.complete = errored == len(batch.errors) and warned == len(batch.warnings)
        # A duplicate's warning is found at its later row; show them in row order.
        batch.warnings.sort(key=lambda w: w["row"])
        if on_chunk:
            on_chunk(done, done)
        return batch
    finally:
        sheet.close()


def duplicate_warning(header: Header, earlier: int, number: int, result: RowResult) -> dict:
    return {
        "row": earlier,
        "column": header.letter("Machine ID"),
        "message": f"{result.machine} is listed again in row {number}; "
        "this row is ignored and the last one is used.",
    }


def iter_row_results(path: Path, *, index: MachineIndex, on_row: Callable[[], None] | None = None):
    """(header, iterator of (row, values, errors, warnings, status)) for the
    error report: two streaming passes (the first finds each machine's last
    row), so the report never holds the whole sheet or all its messages.
    `on_row()` is called after every row read, in both passes."""
    last_row: dict[str, int] = {}
    header, rows = iter_data_rows(path)
    for number, values in rows:
        if on_row:
            on_row()
        column = header.columns["Machine ID"]
        raw = values[column] if column < len(values) else None
        if isinstance(raw, str) and MACHINE_ID_RE.match(raw.strip()):
            last_row[raw.strip()] = number
    header, rows = iter_data_rows(path)

    validate = RowValidator(header, index)

    def results():
        for number, values in rows:
            if on_row:
                on_row()
            result = validate(number, values)
            warnings = list(result.warnings)
            status = "invalid" if result.errors else "valid"
            later = last_row.get(result.machine) if result.machine else None
            if later is not None and later != number:
                warnings.insert(0, duplicate_warning(header, number, later, result))
                status = status if result.errors else "ignored"
            yield number, values, result.errors, warnings, status

    return header, results()


def iter_data_rows(path: Path) -> tuple[Header, Iterator[tuple[int, tuple]]]:
    """The header and the raw non-blank data rows, for the error report."""
    from .readers import open_rows

    sheet = open_rows(path)
    rows = sheet.rows
    try:
        header = find_header(rows, sheet.title)
    except BaseException:
        sheet.close()
        raise

    def data() -> Iterator[tuple[int, tuple]]:
        try:
            yield from rows
        finally:
            sheet.close()

    return header, data()
