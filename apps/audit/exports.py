import io
from datetime import UTC

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from fleetops.xlsx import text_cell

EXPORT_LIMIT = 100_000
COLUMNS = [
    ("Time (UTC)", "at"),
    ("Actor", "actor_label"),
    ("Host", "host"),
    ("Action", "action"),
    ("Line", "line_code"),
    ("Machine", "machine_code"),
    ("Field", "field"),
    ("Old value", "old_value"),
    ("New value", "new_value"),
    ("Transaction", "tx_id"),
    ("Outcome", "outcome"),
    ("Reason", "reason"),
    ("Hash", "hash"),
]


def audit_events_xlsx(*, events) -> tuple[bytes, bool]:
    """The events as an .xlsx (write-only, so memory stays flat), at most
    EXPORT_LIMIT rows; every text is a text cell, never a formula."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Audit")
    sheet.append([text_cell(WriteOnlyCell(sheet), title) for title, _ in COLUMNS])
    count = 0
    truncated = False
    for event in events.iterator(chunk_size=2000):
        if count >= EXPORT_LIMIT:
            truncated = True
            break
        row = []
        for _title, name in COLUMNS:
            value = getattr(event, name)
            if name == "at":
                row.append(value.astimezone(UTC).replace(tzinfo=None))
            else:
                row.append(text_cell(WriteOnlyCell(sheet), "" if value is None else str(value)))
        sheet.append(row)
        count += 1
    if truncated:
        note = f"Export stopped at {EXPORT_LIMIT} rows: narrow the filters for the rest."
        sheet.append([text_cell(WriteOnlyCell(sheet), note)])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue(), truncated
