"""The error report of a setpoint workbook upload on PostgreSQL: the report
task (claim, check every row again, write the file, mark it ready), the
download once it is ready, and the writer alone, beside in the same run:
the check alone (the two streaming passes with no writing, the floor) and
the writer as it was before (every cell a WriteOnlyCell, built into memory
inside the download request).

Workbooks have the shape of bench_workbooks (rows cycle over the seeded
machines, so most rows are duplicates whose Machine ID is warned yellow).
Every figure runs in a child process (same bench database; the report task
in a fresh one, after another child uploaded and parsed the workbook); peak
memory is the child's peak RSS growth (VmHWM reset through
/proc/self/clear_refs).

Sizes (environment):

  BENCH_REPORT_ROWS=20000,100000    data rows per workbook
  BENCH_REPORT_MACHINES=1000        machines seeded
"""

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench._support import (
    BenchUnavailable,
    bench_database,
    env_int,
    services_require,
)
from bench._workbook_fixtures import (
    child_figure,
    peak_rss_reset,
    plant_seed,
    rss_mb,
    setpoint_workbook_write,
)
from bench.report import Row, below


def _sizes() -> list[int]:
    text = os.environ.get("BENCH_REPORT_ROWS", "20000,100000")
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchUnavailable("BENCH_REPORT_ROWS must be integers, e.g. 20000,100000") from None


def run() -> list[Row]:
    services_require(who="bench_reports")
    machines = env_int("BENCH_REPORT_MACHINES", 1000)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp, bench_database():
        codes = plant_seed(machines)
        for size in _sizes():
            path = Path(tmp) / f"setpoints-{size}.xlsx"
            setpoint_workbook_write(path, size, codes)
            check = _child("check", path, size, tmp)
            before = _child("before", path, size, tmp)
            writer = _child("writer", path, size, tmp)
            upload = _child("upload", path, size, tmp)
            task = _child("task", upload["upload_id"], size, tmp)
            figures = {"check": check, "before": before, "writer": writer, "task": task}
            print(f"  {size} rows: {json.dumps(figures)}", flush=True)
            rows += [
                Row(
                    f"download of the report, {size:,} rows (the stored file, once ready)",
                    task["download_seconds"] * 1000,
                    "ms",
                    "before: built inside the download request",
                    before["seconds"] * 1000,
                    below(1_000),
                    higher_is_better=False,
                ),
                Row(
                    f"report task (claim, check, write the file, ready), {size:,} rows",
                    task["seconds"],
                    "s",
                    "before: the same build inside the request",
                    before["seconds"],
                    higher_is_better=False,
                ),
                Row(
                    f"report writer, {size:,} rows",
                    size / writer["seconds"],
                    "rows/s",
                    "before: every cell a WriteOnlyCell",
                    size / before["seconds"],
                ),
                Row(
                    f"report writer, {size:,} rows",
                    size / writer["seconds"],
                    "rows/s",
                    "the check alone, no writing (floor)",
                    size / check["seconds"],
                ),
                Row(
                    f"report task peak RSS growth, {size:,} rows",
                    task["peak_mb"],
                    "MB",
                    "before: built into memory",
                    before["peak_mb"],
                    below(200),
                    higher_is_better=False,
                ),
                # What the writer adds to reading the sheet (calamine holds
                # it as a dense range): flat means about 1.0x.
                Row(
                    f"report writer peak RSS growth, {size:,} rows",
                    writer["peak_mb"],
                    "MB",
                    "the check alone (reading)",
                    check["peak_mb"],
                    higher_is_better=False,
                ),
            ]
    return rows


# Setup
# -----


# The writer before (the baseline)
# --------------------------------


def _report_all_cells(*, path, index) -> bytes:
    """The error report as the download request built it before: every
    cell a WriteOnlyCell with its own style lookups, saved into memory."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    from apps.workbooks import parsing
    from apps.workbooks.writers import INVALID_FILL, WARNING_FILL, _plain
    from fleetops.xlsx import text_cell

    def cell(ws, value, fill=None):
        c = WriteOnlyCell(ws)
        value = _plain(value)
        if isinstance(value, str):
            text_cell(c, value)
        else:
            c.value = value
        if fill is not None:
            c.fill = fill
        return c

    header, results = parsing.iter_row_results(path, index=index)
    workbook = Workbook(write_only=True)
    ws = workbook.create_sheet("Report")
    ws.append(
        [cell(ws, "Row")]
        + [cell(ws, v) for v in header.titles]
        + [cell(ws, "Status"), cell(ws, "Messages")]
    )
    for number, values, errors, warnings, status in results:
        bad = {e["column"] for e in errors}
        warned = {w["column"] for w in warnings}
        cells = [cell(ws, number)]
        for i in range(header.width):
            letter = parsing.get_column_letter(i + 1)
            value = values[i] if i < len(values) else None
            fill = INVALID_FILL if letter in bad else WARNING_FILL if letter in warned else None
            cells.append(cell(ws, value, fill))
        messages = [f"{e['column']}{number}: {e['message']}" for e in errors]
        messages += [f"{w['column']}{number}: {w['message']} (warning)" for w in warnings]
        cells.append(cell(ws, status, INVALID_FILL if errors else None))
        cells.append(cell(ws, "\n".join(messages)))
        ws.append(cells)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# Children
# --------


def _child(kind: str, path, size: int, tmp: str) -> dict:
    return child_figure(
        "bench.bench_reports", kind, path, size, tmp, workbook_max_rows=max(size, 100_000)
    )


def _child_main(kind: str, path: str, size: int, tmp: str) -> dict:
    import django

    django.setup()
    import openpyxl  # noqa: F401  (imports are not the run's memory)
    import python_calamine  # noqa: F401
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from apps.workbooks import parsing, readers, writers  # noqa: F401
    from fleetops.celery import app as celery_app

    settings.WORKBOOK_UPLOAD_DIR = Path(tmp) / "uploads"
    celery_app.conf.update(task_always_eager=True, task_eager_propagates=True)
    admin = get_user_model().objects.get(username="admin")
    if kind == "upload":
        return _upload(path, tmp, admin)
    if kind == "task":
        return _task(int(path), size, admin)
    index = parsing.MachineIndex.for_user(admin)
    before = peak_rss_reset()
    t0 = time.perf_counter()
    if kind == "check":
        _, results = parsing.iter_row_results(Path(path), index=index)
        count = sum(1 for _ in results)
    elif kind == "before":
        content = _report_all_cells(path=Path(path), index=index)
        count = _rows_in(content)
    else:
        with open(Path(tmp) / "writer.xlsx", "wb") as out:
            count = writers.error_report_write(path=Path(path), index=index, target=out)
    seconds = time.perf_counter() - t0
    if count != size:
        raise SystemExit(f"{kind}: {count} rows, expected {size}")
    return {"seconds": seconds, "peak_mb": max(rss_mb("VmHWM") - before, 0.0)}


def _rows_in(content: bytes) -> int:
    from python_calamine import CalamineWorkbook

    return (
        sum(
            1
            for _ in CalamineWorkbook.from_filelike(io.BytesIO(content))
            .get_sheet_by_index(0)
            .iter_rows()
        )
        - 1
    )


def _upload(path: str, tmp: str, admin) -> dict:
    """Upload the workbook (parse and report run eagerly on commit)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.workbooks import services
    from apps.workbooks.models import WorkbookUpload

    upload = services.upload_create(
        uploader=admin, file=SimpleUploadedFile("setpoints.xlsx", Path(path).read_bytes())
    )
    upload = WorkbookUpload.objects.get(pk=upload.pk)
    if upload.report_status != "ready":
        raise SystemExit(f"upload: report {upload.report_status}: {upload.report_message}")
    return {"upload_id": upload.pk}


def _task(upload_id: int, size: int, admin) -> dict:
    """One more run of the report task, in a fresh process, then the
    download of the file it wrote."""
    from django.test import Client

    from apps.workbooks import services
    from apps.workbooks.models import WorkbookUpload

    WorkbookUpload.objects.filter(pk=upload_id).update(report_status="preparing")
    before = peak_rss_reset()
    t0 = time.perf_counter()
    status = services.upload_report_build(upload_id=upload_id)
    seconds = time.perf_counter() - t0
    peak = max(rss_mb("VmHWM") - before, 0.0)
    upload = WorkbookUpload.objects.get(pk=upload_id)
    if status != "ready" or upload.report_rows_done != size:
        raise SystemExit(f"task: ended {status} with {upload.report_rows_done} rows")

    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    t0 = time.perf_counter()
    response = client.get(f"/workbooks/{upload_id}/report.xlsx")
    content = b"".join(response.streaming_content)
    download = time.perf_counter() - t0
    response.close()
    if response.status_code != 200 or _rows_in(content) != size:
        raise SystemExit(f"task: download answered {response.status_code}")
    return {"seconds": seconds, "peak_mb": peak, "download_seconds": download}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tmp = sys.argv[4] if len(sys.argv) > 4 else ""
    print(json.dumps(_child_main(kind, path, size, tmp)))
