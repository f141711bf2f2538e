"""On the services profile the parse runs in a real Celery worker process."""

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.control.models import PendingLock
from apps.workbooks import services
from apps.workbooks.models import WorkbookUpload
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
    finally:
        for path in stored:
            path.unlink(missing_ok=True)
