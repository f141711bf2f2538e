"""On the services profile the parse and the error report run in a real
Celery worker process."""

import io
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.control.models import PendingLock
from apps.workbooks import services, writers
from apps.workbooks.models import WorkbookUpload
from apps.workbooks.parsing import MachineIndex
from tests.support.processes import celery_worker

from .conftest import as_upload

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def wait_until_final(upload_id: int, timeout: float = 60) -> WorkbookUpload:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        upload = WorkbookUpload.objects.get(pk=upload_id)
        if not upload.is_active:
            return upload
        time.sleep(0.2)
    raise AssertionError(f"upload {upload_id} still {upload.status} after {timeout}s")


def parts(content: bytes) -> dict[str, bytes]:
    """The parts of an .xlsx package but its timestamps (docProps/core.xml)."""
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        return {n: package.read(n) for n in package.namelist() if n != "docProps/core.xml"}


def test_a_worker_process_parses_and_applies_uploads(plant, operator1, xlsx, settings):
    # The worker process only knows the default upload directory.
    settings.WORKBOOK_UPLOAD_DIR = Path(settings.VAR_DIR) / "uploads"
    stored = []
    try:
        with celery_worker():
            upload = services.upload_create(
                uploader=operator1, file=as_upload(xlsx([["m:401", 1500, "RUN"], ["m:999", 1]]))
            )
            stored.append(services.upload_path(upload))
            upload = wait_until_final(upload.pk)
            assert upload.status == "applied", upload.message
            assert upload.attempts == 1 and upload.summary["invalid"] == 1
            assert PendingLock.objects.filter(tx=upload.transaction).count() == 2

            # Queued while the broker was down: the sweeper sends it again.
            stuck = services.upload_create(
                uploader=operator1,
                file=as_upload(xlsx([["m:402", 10]])),
                validate_only=True,
            )
            stored.append(services.upload_path(stuck))
            wait_until_final(stuck.pk)
            WorkbookUpload.objects.filter(pk=stuck.pk).update(
                status="queued", updated_at=timezone.now() - timedelta(hours=1)
            )
            assert services.uploads_requeue_stuck() == [stuck.pk]
            stuck = wait_until_final(stuck.pk)
            assert stuck.status == "parsed" and stuck.attempts == 2
            for upload_id in (upload.pk, stuck.pk):  # their reports, written after
                stored.append(services.upload_report_path(wait_until_report_final(upload_id)))
    finally:
        for path in stored:
            if path is not None:
                path.unlink(missing_ok=True)


def wait_until_report_final(upload_id: int, timeout: float = 60) -> WorkbookUpload:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        upload = WorkbookUpload.objects.get(pk=upload_id)
        if upload.report_status in ("ready", "failed"):
            return upload
        time.sleep(0.2)
    raise AssertionError(f"report of upload {upload_id} still {upload.report_status!r}")


def test_a_worker_process_writes_the_report_after_the_parse(
    plant, operator1, xlsx, settings, client_for
):
    settings.WORKBOOK_UPLOAD_DIR = Path(settings.VAR_DIR) / "uploads"
    stored = []
    try:
        with celery_worker():
            upload = services.upload_create(
                uploader=operator1,
                file=as_upload(xlsx([["m:401", 1500, "RUN"], ["=1+1", 1], ["m:401", 10]])),
                validate_only=True,
            )
            stored.append(services.upload_path(upload))
            assert wait_until_final(upload.pk).status == "parsed"
            # Nothing runs tasks in this process: the worker wrote it.
            upload = wait_until_report_final(upload.pk)
            stored.append(services.upload_report_path(upload))
            assert upload.report_status == "ready", upload.report_message
            assert upload.report_rows_done == 3

            response = client_for(operator1).get(
                reverse("workbooks:error-report", args=[upload.pk])
            )
            assert response.status_code == 200
            content = b"".join(response.streaming_content)
            response.close()
            fresh = writers.error_report_workbook(
                path=services.upload_path(upload), index=MachineIndex.for_user(operator1)
            )
            assert parts(content) == parts(fresh)

            # Asked for again (as for an upload parsed before reports were
            # kept): queued from the request, written by the worker.
            WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="", report_path="")
            response = client_for(operator1).get(
                reverse("workbooks:error-report", args=[upload.pk])
            )
            assert response.status_code == 302
            upload = wait_until_report_final(upload.pk)
            stored.append(services.upload_report_path(upload))
            assert upload.report_status == "ready" and stored[-1] != stored[-2]
    finally:
        for path in stored:
            if path is not None:
                path.unlink(missing_ok=True)
