"""Setpoint workbook uploads on PostgreSQL, end to end (upload accepted ->
parse -> validate -> `setpoint_batch_request` locks created, the path the
Celery task runs, run eagerly), beside in the same run: a bare openpyxl
read-only iteration of the same file, python-calamine reading it (the
floor), and django-import-export importing the same rows into an
equivalent model (what a Django team would otherwise use).

The django-import-export figure is its admin's confirmed import with
default options: the uploaded bytes read into a tablib Dataset by its XLSX
format, then `ModelResource.import_data(dataset, dry_run=False)` (row by
row, a savepoint per row, the default ModelInstanceLoader; the file has no
`id` column, so every row is a new instance and no lookup query runs). Its
admin also runs a dry-run pass of the same import before the confirmed one;
that pass is not counted, which flatters the baseline. It needs the `bench`
extra (`make bench` installs it).

Every reading figure runs in a child process (same bench database), and its
peak memory is the child's peak RSS (VmHWM, reset through
/proc/self/clear_refs just before the run) minus its RSS then, so
calamine's Rust allocations count too (tracemalloc would miss them).

Sizes (environment):

  BENCH_WORKBOOK_ROWS=1000,10000,100000   data rows per workbook
  BENCH_WORKBOOK_MACHINES=1000            machines seeded (rows cycle over them)
  BENCH_WORKBOOK_IMPORT_EXPORT_MAX_ROWS=100000
      django-import-export runs only at sizes up to this (about 3 minutes
      at 100,000 rows); 0 skips it, and then it need not be installed
"""

import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
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
from bench.report import Row, at_least_times, below

IMPORT_EXPORT_TABLE = "bench_workbook_rows"


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
    import_export_max = env_int("BENCH_WORKBOOK_IMPORT_EXPORT_MAX_ROWS", 100_000)
    if any(size <= import_export_max for size in sizes):
        _import_export_require()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-workbooks-") as tmp, bench_database():
        codes = plant_seed(machines_wanted)
        for size in sizes:
            path = Path(tmp) / f"setpoints-{size}.xlsx"
            setpoint_workbook_write(path, size, codes)
            floor = _child("calamine", path, size)
            bare = _child("openpyxl", path, size)
            parse = _child("parse", path, size)
            parse_old = _child("parse-openpyxl", path, size)
            e2e = _child("e2e", path, size, tmp=tmp)
            figures = {"floor": floor, "openpyxl": bare, "parse": parse, "e2e": e2e}
            figures["parse_openpyxl"] = parse_old
            if size <= import_export_max:
                with _import_export_table():
                    figures["import_export"] = _child("import-export", path, size)
            print(f"  {size} rows: {json.dumps(figures)}", flush=True)
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
                    below(200),
                    higher_is_better=False,
                ),
            ]
            if "import_export" in figures:
                rows += _import_export_rows(size, figures["import_export"], e2e)
    return rows


def _rows_for(size: int, floor: dict, bare: dict, e2e: dict) -> list[Row]:
    floor_rate = size / floor["seconds"]
    target = {10_000: below(1), 100_000: below(5)}.get(size)
    return [
        Row(
            f"e2e upload -> locks, {size:,} rows (reader: {e2e['engine']})",
            size / e2e["seconds"],
            "rows/s",
            "calamine floor",
            floor_rate,
            at_least_times(0.1, floor_rate, "floor"),
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
            below(200),
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


def _import_export_rows(size: int, baseline: dict, e2e: dict) -> list[Row]:
    e2e_rate = size / e2e["seconds"]
    baseline_rate = size / baseline["seconds"]
    return [
        Row(
            f"django-import-export default import, {size:,} rows",
            baseline_rate,
            "rows/s",
            "e2e upload",
            e2e_rate,
        ),
        Row(
            f"django-import-export peak RSS growth, {size:,} rows",
            baseline["peak_mb"],
            "MB",
            "e2e upload",
            e2e["peak_mb"],
            higher_is_better=False,
        ),
        Row(
            f"e2e vs django-import-export, {size:,} rows",
            e2e_rate,
            "rows/s",
            "django-import-export",
            baseline_rate,
            at_least_times(30, baseline_rate, "django-import-export"),
        ),
    ]


# Setup
# -----


# django-import-export
# --------------------


def _import_export_require() -> None:
    try:
        import import_export  # noqa: F401
        from import_export.formats.base_formats import XLSX
    except ImportError:
        raise BenchUnavailable(
            "bench_workbooks: django-import-export (the baseline) is not installed: run "
            "`make bench`, or `.venv/bin/pip install -e '.[test,bench]'` "
            "(or set BENCH_WORKBOOK_IMPORT_EXPORT_MAX_ROWS=0 to leave it out)."
        ) from None
    if not XLSX.is_available():
        raise BenchUnavailable("bench_workbooks: tablib cannot read xlsx (needs openpyxl).")


@contextmanager
def _import_export_table():
    """The equivalent model's table, empty, in the bench database for one run."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {IMPORT_EXPORT_TABLE}")
        cursor.execute(
            f"CREATE TABLE {IMPORT_EXPORT_TABLE} (id bigserial PRIMARY KEY, "
            "machine varchar(32) NOT NULL, target_speed integer NOT NULL, "
            "mode varchar(16) NOT NULL)"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {IMPORT_EXPORT_TABLE}")


_CLASSES = {}


def _import_export_classes():
    """The equivalent model and its ModelResource, defined once (models
    register globally). The resource keeps every default option (all the
    model's fields, `id` the import id); its fields are declared only to name
    the template's column headers."""
    if _CLASSES:
        return _CLASSES["model"], _CLASSES["resource"]
    from django.db import models
    from import_export import fields, resources, widgets

    class BenchSetpointRow(models.Model):  # noqa: DJ008
        machine = models.CharField(max_length=32)
        target_speed = models.IntegerField()
        mode = models.CharField(max_length=16)

        class Meta:
            # An installed app's label: import-export deep-copies each
            # instance, and unpickling looks the model up in the app registry.
            # Defined only in the bench child, unmanaged: no migration sees it.
            app_label = "workbooks"
            db_table = IMPORT_EXPORT_TABLE
            managed = False

    class SetpointRowResource(resources.ModelResource):
        # The widgets are the ones ModelResource picks for these model fields.
        machine = fields.Field(
            attribute="machine", column_name="Machine ID", widget=widgets.CharWidget()
        )
        target_speed = fields.Field(
            attribute="target_speed", column_name="Target Speed", widget=widgets.IntegerWidget()
        )
        mode = fields.Field(attribute="mode", column_name="Mode", widget=widgets.CharWidget())

        class Meta:
            model = BenchSetpointRow

    _CLASSES.update(model=BenchSetpointRow, resource=SetpointRowResource)
    return BenchSetpointRow, SetpointRowResource


# Children
# --------


def _child(kind: str, path, size: int, tmp: str = "") -> dict:
    return child_figure(
        "bench.bench_workbooks", kind, path, size, tmp, workbook_max_rows=max(size, 20_000)
    )


def _child_main(kind: str, path: str, size: int, tmp: str) -> dict:
    import django

    django.setup()
    import openpyxl  # noqa: F401  (imports are not the run's memory)
    import python_calamine  # noqa: F401

    from apps.workbooks import readers  # noqa: F401

    if kind == "import-export":
        from import_export.formats.base_formats import XLSX

        XLSX.is_available()  # loads tablib's xlsx format
        _import_export_classes()
    before = peak_rss_reset()
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
    elif kind == "import-export":
        seconds, count, engine = _import_export(path, size)
    else:
        seconds, count, engine = _e2e(path, size, tmp)
    if count != size + 1:
        raise SystemExit(f"{kind}: read {count} rows, expected {size + 1}")
    return {
        "seconds": seconds,
        "peak_mb": max(rss_mb("VmHWM") - before, 0.0),
        "engine": engine,
    }


def _parse(path: str, *, force_openpyxl: bool) -> tuple[float, int, str]:
    """What the task does before control: deep precheck, the machine index,
    parse and validate every row (no database writes)."""
    import functools

    from django.contrib.auth import get_user_model

    from apps.workbooks import parsing, precheck, readers
    from apps.workbooks.models import STORED_MESSAGES_LIMIT

    if force_openpyxl:
        readers.open_rows = functools.partial(readers.open_rows, engine="openpyxl")
    with readers.open_rows(path) as sheet:
        engine = sheet.engine
    admin = get_user_model().objects.get(username="admin")
    t0 = time.perf_counter()
    precheck.precheck(Path(path), deep=True)
    batch = parsing.parse_workbook(
        Path(path),
        index=parsing.MachineIndex.for_user(admin),
        on_chunk=lambda done, total: None,
        max_messages=STORED_MESSAGES_LIMIT,
    )
    seconds = time.perf_counter() - t0
    return seconds, batch.rows_total + 1, engine


def _import_export(path: str, size: int) -> tuple[float, int, str]:
    """What django-import-export's admin does once the user confirms an
    import: the uploaded bytes through its XLSX format into a tablib
    Dataset, then import_data() of the default resource."""
    from import_export.formats.base_formats import XLSX

    model, resource_class = _import_export_classes()
    data = Path(path).read_bytes()
    t0 = time.perf_counter()
    dataset = XLSX().create_dataset(data)
    result = resource_class().import_data(dataset, dry_run=False, raise_errors=True)
    seconds = time.perf_counter() - t0
    if result.has_errors() or result.has_validation_errors():
        raise SystemExit("import-export: the import reported errors")
    created = model.objects.count()
    if created != size or result.totals["new"] != size:
        raise SystemExit(
            f"import-export: {created} rows created ({result.totals['new']} new), expected {size}"
        )
    return seconds, len(dataset) + 1, "openpyxl via tablib"


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
    _warm_up(admin, Path(tmp) / "warm-up.xlsx")
    locks_before = PendingLock.objects.count()
    # The run queues the error report once its locks are committed; a worker
    # writes it afterwards (bench_reports measures it). Eagerly it would run
    # inside upload_create, so the clock stops where a worker would take it.
    applied_at = []
    services.upload_report_enqueue = lambda *, upload_id: applied_at.append(time.perf_counter())
    t0 = time.perf_counter()
    # upload_create stores the file and, on commit, runs the task eagerly.
    upload = services.upload_create(uploader=admin, file=upload_file)
    if len(applied_at) != 1:
        raise SystemExit("e2e: the run did not finish by queueing its report")
    seconds = applied_at[0] - t0
    upload = WorkbookUpload.objects.get(pk=upload.pk)
    if upload.status != WorkbookUpload.Status.APPLIED:
        raise SystemExit(f"e2e: upload ended {upload.status}: {upload.message}")
    created = PendingLock.objects.count() - locks_before
    if created != 2 * upload.summary["valid"]:  # target speed and mode of each machine
        raise SystemExit(f"e2e: {created} locks for {upload.summary['valid']} machines")
    return seconds, upload.summary["total"] + 1, engine


def _warm_up(admin, path: Path) -> None:
    """One small upload through the same path first, as a running worker has
    done before the upload an operator waits for: the figure is the upload,
    not the process's first database connection, Redis connection and
    template loads."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.plant.models import Machine
    from apps.workbooks import services

    codes = list(Machine.objects.order_by("-code").values_list("code", flat=True)[:10])
    setpoint_workbook_write(path, len(codes), codes)
    services.upload_create(
        uploader=admin, file=SimpleUploadedFile("warm-up.xlsx", path.read_bytes())
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tmp = sys.argv[4] if len(sys.argv) > 4 else ""
    print(json.dumps(_child_main(kind, path, size, tmp)))
