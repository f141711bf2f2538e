"""Spreadsheet cells the product writes, safe to open in Excel.

openpyxl stores a string that starts with "=" as a formula, and Excel
re-evaluates text that starts with "+", "-", "@", tab or CR once someone
edits the cell. Every string therefore goes out as a string cell, and
such strings also get Excel's quote prefix (the hidden apostrophe).
"""

from openpyxl.cell.cell import ERROR_CODES

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def text_cell(cell, value: str):
    """Put `value` in `cell` as plain text, never as a formula."""
    cell.value = value
    cell.data_type = "s"
    if value.startswith(FORMULA_PREFIXES):
        cell.quotePrefix = True
    return cell


def is_plain_text(value: str) -> bool:
    """True when openpyxl, given `value` as it is, writes exactly what
    text_cell would: a string cell with no quote prefix (it turns "=..."
    into a formula and "#N/A" and the like into error cells)."""
    return not value.startswith(FORMULA_PREFIXES) and value not in ERROR_CODES
