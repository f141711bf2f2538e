"""On the services profile, a Celery worker killed (SIGKILL) mid-parse, and
then mid-report, loses nothing: its run stops beating, the beat sweeper
restarts it, and a new worker finishes it in seconds, not minutes."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
from openpyxl import Workbook

from apps.workbooks import services
from apps.workbooks.models import WorkbookUpload
from tests.support.processes import celery_beat, celery_worker

from .conftest import HEADER, as_upload
from .test_worker import wait_until_final, wait_until_report_final

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# A heartbeat every second, a run lost after 5 s silent, a sweep every
# second: the defaults (30 s, 10 s) scaled down to keep the test short.
FAST_SWEEP = {"WORKBOOK_HEARTBEAT_STALE_SECONDS": 5, "WORKBOOK_SWEEP_EVERY_SECONDS": 1}
ROWS = 50_000


def slow_workbook(path: Path) -> Path:
    """A sheet that takes seconds to parse and to report on: its error cell
    sends it to openpyxl (see readers.py), about 20x slower than calamine."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Setpoints")
    sheet.append(HEADER)
    for n in range(ROWS - 1):
        sheet.append([f"m:{401 + n % 4}", n % 3000, "RUN"])
    sheet.append(["m:401", "#N/A"])
    workbook.save(path)
    return path


def wait_for(condition, what: str, timeout: float = 60) -> WorkbookUpload:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        upload = WorkbookUpload.objects.get()
        if condition(upload):
            return upload
        time.sleep(0.02)
    raise AssertionError(f"never {what} within {timeout}s")


def kill(worker: subprocess.Popen) -> float:
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    return time.monotonic()


def test_a_worker_killed_mid_parse_then_mid_report_loses_nothing(
    plant, operator1, tmp_path, settings
):
    # The worker processes only know the default upload directory.
    settings.WORKBOOK_UPLOAD_DIR = Path(settings.VAR_DIR) / "uploads"
    book = slow_workbook(tmp_path / "slow.xlsx")
    stored = []
    try:
        with celery_beat(tmp_path, **FAST_SWEEP):
            with celery_worker(**FAST_SWEEP) as first:
                upload = services.upload_create(
                    uploader=operator1, file=as_upload(book), validate_only=True
                )
                stored.append(services.upload_path(upload))
                wait_for(lambda u: u.status == "parsing" and u.rows_done, "parsing", timeout=90)
                killed_at = kill(first)
            assert WorkbookUpload.objects.get().status == "parsing", "parsed before the kill"

            with celery_worker(purge=False, **FAST_SWEEP) as second:
                upload = wait_until_final(upload.pk, timeout=60)
                assert time.monotonic() - killed_at < 60
                assert upload.status == "parsed" and upload.attempts == 2, upload.message
                assert upload.summary["total"] == ROWS and upload.summary["invalid"] == 1

                # Its report is written next, by the same worker: kill it there too.
                wait_for(lambda u: u.report_run is not None, "writing the report")
                killed_at = kill(second)
            assert WorkbookUpload.objects.get().report_status == "preparing"

            with celery_worker(purge=False, **FAST_SWEEP):
                upload = wait_until_report_final(upload.pk, timeout=60)
                assert time.monotonic() - killed_at < 60
                stored.append(services.upload_report_path(upload))
                assert upload.report_status == "ready", upload.report_message
                assert upload.report_attempts == 2 and upload.report_rows_done == ROWS
    finally:
        for path in stored:
            if path is not None:
                path.unlink(missing_ok=True)
