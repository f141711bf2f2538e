"""Setpoint workbook uploads on PostgreSQL, end to end (upload accepted ->
parse -> validate -> `setpoint_batch_request` locks created, the path the
Celery task runs, run eagerly), beside in the same run: a bare openpyxl
read-only iteration of the same file, python-calamine reading it (the
floor), and a plain Django-ORM row-by-row create of the same rows into an
equivalent table (a STAND-IN for django-import-export, which is not
installed: it also saves row by row).

Every reading figure runs in a child process (same bench database), and its
peak memory is the child's peak RSS (VmHWM, reset through
/proc/self/clear_refs just before the run) minus its RSS then, so
calamine's Rust allocations count too (tracemalloc would miss them).

Sizes (environment):

  BENCH_WORKBOOK_ROWS=1000,10000,100000   data rows per workbook
  BENCH_WORKBOOK_MACHINES=1000            machines seeded (rows cycle over them)
  BENCH_WORKBOOK_ORM_MAX_ROWS=10000       the ORM stand-in runs up to this size
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._support import (
    ROOT,
    BenchUnavailable,
    bench_database,
    child_env,
    env_int,
    fast_hashers,
    services_require,
)
from bench.report import Row

MODES = ("RUN", "IDLE", "MAINTENANCE")
ORM_TABLE = "bench_workbook_rows"


def _sizes() -> list[int]:
    text = os.environ.get("BENCH_WORKBOOK_ROWS", "1000,10000,100000")
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchUnavailable("BENCH_WORKBOOK_ROWS must be integers, e.g. 1000,10000") from None


def run() -> list[Row]:
    services_require(who="bench_workbooks")
    sizes = _sizes()
    machines_wanted = env_int("BENCH_WORKBOOK_MACHINES", 1000)
    orm_max = env_int("BENCH_WORKBOOK_ORM_MAX_ROWS", 10_000)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-workbooks-") as tmp, bench_database():
        codes = _plant_seed(machines_wanted)
        for size in sizes:
            path = Path(tmp) / f"setpoints-{size}.xlsx"
            _workbook_write(path, size, codes)
            floor = _child("calamine", path, size)
            bare = _child("openpyxl", path, size)
            parse = _child("parse", path, size)
            parse_old = _child("parse-openpyxl", path, size)
            e2e = _child("e2e", path, size, tmp=tmp)
            figures = {"floor": floor, "openpyxl": bare, "parse": parse, "e2e": e2e}
            print(f"  {size} rows: {json.dumps(figures | {'parse_openpyxl': parse_old})}")
            rows += _rows_for(size, floor, bare, e2e)
            rows += [
                Row(
                    f"precheck + parse + validate only, {size:,} rows (reader: {parse['engine']})",
                    size / parse["seconds"],
                    "rows/s",
                    "same, openpyxl reader (before)",
                    size / parse_old["seconds"],
                ),
                Row(
                    f"parse peak RSS growth, {size:,} rows",
                    parse["peak_mb"],
                    "MB",
                    "same, openpyxl reader (before)",
                    parse_old["peak_mb"],
                    "< 200 MB",
                    higher_is_better=False,
                ),
            ]
            if size <= orm_max:
                orm = _orm_standin(path, size)
                rows.append(
                    Row(
                        f"ORM row-by-row create, {size:,} rows"
                        " (stand-in, NOT django-import-export)",
                        size / orm,
                        "rows/s",
                        "e2e upload",
                        size / e2e["seconds"],
                    )
                )
    return rows


def _rows_for(size: int, floor: dict, bare: dict, e2e: dict) -> list[Row]:
    floor_rate = size / floor["seconds"]
    target = {10_000: "< 1 s", 100_000: "< 5 s"}.get(size, "")
    return [
        Row(
            f"e2e upload -> locks, {size:,} rows (reader: {e2e['engine']})",
            size / e2e["seconds"],
            "rows/s",
            "calamine floor",
            floor_rate,
            ">= 0.1x floor",
        ),
        Row(
            f"e2e upload -> locks, {size:,} rows",
            e2e["seconds"],
            "s",
            "bare openpyxl read-only",
            bare["seconds"],
            target,
            higher_is_better=False,
        ),
        Row(
            f"e2e peak RSS growth, {size:,} rows",
            e2e["peak_mb"],
            "MB",
            "calamine floor",
            floor["peak_mb"],
            "< 200 MB",
            higher_is_better=False,
        ),
        Row(
            f"bare openpyxl read-only, {size:,} rows",
            size / bare["seconds"],
            "rows/s",
            "calamine floor",
            floor_rate,
        ),
    ]


# Setup
# -----


def _plant_seed(machines: int) -> list[str]:
    from apps.plant.models import Machine
    from apps.plant.services import demo_plant_seed

    t0 = time.perf_counter()
    per_line = min(100, machines)
    with fast_hashers():
        demo_plant_seed(
            lines=-(-machines // per_line), machines_per_line=per_line, sensors=2, password="bench"
        )
    codes = list(Machine.objects.order_by("code").values_list("code", flat=True))[:machines]
    print(f"  seeded {len(codes)} machines ({time.perf_counter() - t0:.1f} s)", flush=True)
    return codes


def _workbook_write(path: Path, size: int, codes: list[str]) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Setpoints")
    sheet.append(["Machine ID", "Target Speed", "Mode"])
    for n in range(size):
        sheet.append([codes[n % len(codes)], (n * 7) % 3001, MODES[n % 3]])
    workbook.save(path)


def _child(kind: str, path: Path, size: int, tmp: str = "") -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_workbooks", kind, str(path), str(size), tmp],
        cwd=ROOT,
        env=child_env(WORKBOOK_MAX_ROWS=max(size, 20_000), LOG_LEVEL="ERROR"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# The ORM stand-in
# ----------------


def _orm_standin(path: Path, size: int) -> float:
    """Read with openpyxl and save each row with Model.objects.create in a
    transaction per row, the way a naive (or import-export's default)
    importer does; returns seconds."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {ORM_TABLE}")
        cursor.execute(
            f"CREATE TABLE {ORM_TABLE} (id bigserial PRIMARY KEY, machine varchar(32) NOT NULL, "
            "target_speed integer NOT NULL, mode varchar(16) NOT NULL)"
        )

    SetpointRow = _standin_model()

    from openpyxl import load_workbook

    t0 = time.perf_counter()
    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = workbook.worksheets[0].iter_rows(min_row=2, values_only=True)
        for machine, speed, mode in rows:
            SetpointRow.objects.create(machine=machine, target_speed=speed, mode=mode)
    finally:
        workbook.close()
    seconds = time.perf_counter() - t0
    assert SetpointRow.objects.count() == size
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {ORM_TABLE}")
    return seconds


_MODEL = []


def _standin_model():
    """The stand-in's model, defined once (models register globally)."""
    from django.db import models

    if not _MODEL:

        class SetpointRow(models.Model):  # noqa: DJ008
            machine = models.CharField(max_length=32)
            target_speed = models.IntegerField()
            mode = models.CharField(max_length=16)

            class Meta:
                app_label = "bench"
                db_table = ORM_TABLE
                managed = False

        _MODEL.append(SetpointRow)
    return _MODEL[0]


# Children
# --------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_reset() -> float:
    """Reset the peak RSS (VmHWM) to the current RSS; returns the RSS."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mb("VmRSS")


def _child_main(kind: str, path: str, size: int, tmp: str) -> dict:
    import django

    django.setup()
    import openpyxl  # noqa: F401  (imports are not the run's memory)
    import python_calamine  # noqa: F401

    from apps.workbooks import readers  # noqa: F401

    before = _peak_reset()
    engine = kind
    if kind == "calamine":
        from python_calamine import CalamineWorkbook

        t0 = time.perf_counter()
        workbook = CalamineWorkbook.from_path(path)
        count = sum(1 for _ in workbook.get_sheet_by_index(0).iter_rows())
        seconds = time.perf_counter() - t0
    elif kind == "openpyxl":
        from openpyxl import load_workbook

        t0 = time.perf_counter()
        workbook = load_workbook(path, read_only=True, data_only=True)
        count = sum(1 for _ in workbook.worksheets[0].iter_rows(values_only=True))
        workbook.close()
        seconds = time.perf_counter() - t0
    elif kind in ("parse", "parse-openpyxl"):
        seconds, count, engine = _parse(path, force_openpyxl=kind == "parse-openpyxl")
    else:
        seconds, count, engine = _e2e(path, size, tmp)
    if count != size + 1:
        raise SystemExit(f"{kind}: read {count} rows, expected {size + 1}")
    return {
        "seconds": seconds,
        "peak_mb": max(_status_mb("VmHWM") - before, 0.0),
        "engine": engine,
    }


def _parse(path: str, *, force_openpyxl: bool) -> tuple[float, int, str]:
    """What the task does before control: deep precheck, the machine index,
    parse and validate every row (no database writes)."""
    import functools

    from django.contrib.auth import get_user_model

    from apps.workbooks import parsing, readers
    from apps.workbooks.models import STORED_MESSAGES_LIMIT

    if force_openpyxl:
        readers.open_rows = functools.partial(readers.open_rows, engine="openpyxl")
    with readers.open_rows(path) as sheet:
        engine = sheet.engine
    admin = get_user_model().objects.get(username="admin")
    t0 = time.perf_counter()
    parsing.precheck(Path(path), deep=True)
    batch = parsing.parse_workbook(
        Path(path),
        index=parsing.MachineIndex.for_user(admin),
        on_chunk=lambda done, total: None,
        max_messages=STORED_MESSAGES_LIMIT,
    )
    seconds = time.perf_counter() - t0
    return seconds, batch.rows_total + 1, engine


def _e2e(path: str, size: int, tmp: str) -> tuple[float, int, str]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.control.models import PendingLock
    from apps.workbooks import readers, services
    from apps.workbooks.models import WorkbookUpload
    from fleetops.celery import app as celery_app

    settings.WORKBOOK_UPLOAD_DIR = Path(tmp) / "uploads"
    celery_app.conf.update(task_always_eager=True, task_eager_propagates=True)
    admin = get_user_model().objects.get(username="admin")
    data = Path(path).read_bytes()
    upload_file = SimpleUploadedFile("setpoints.xlsx", data)
    with readers.open_rows(path) as sheet:
        engine = sheet.engine
    locks_before = PendingLock.objects.count()
    t0 = time.perf_counter()
    # upload_create stores the file and, on commit, runs the task eagerly.
    upload = services.upload_create(uploader=admin, file=upload_file)
    seconds = time.perf_counter() - t0
    upload = WorkbookUpload.objects.get(pk=upload.pk)
    if upload.status != WorkbookUpload.Status.APPLIED:
        raise SystemExit(f"e2e: upload ended {upload.status}: {upload.message}")
    created = PendingLock.objects.count() - locks_before
    if created <= 0:
        raise SystemExit("e2e: no lock created")
    return seconds, upload.summary["total"] + 1, engine


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tmp = sys.argv[4] if len(sys.argv) > 4 else ""
    print(json.dumps(_child_main(kind, path, size, tmp)))
