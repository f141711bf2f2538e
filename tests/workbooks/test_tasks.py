
"""The parsing task: end to end (eager), idempotent re-runs, the sweeper."""

import uuid
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from apps.control.models import ControlTransaction, PendingLock
from apps.control.services import setpoint_batch_request
from apps.workbooks import parsing, services, tasks
from apps.workbooks.models import WorkbookUpload

from .conftest import as_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


@pytest.fixture
def new_upload(operator1, xlsx, django_capture_on_commit_callbacks, monkeypatch):
    """An upload stored and queued, its task not run yet."""

    def make(rows=(("m:401", 1500),), validate_only=False) -> WorkbookUpload:
        with django_capture_on_commit_callbacks(execute=False):
            return services.upload_create(
                uploader=operator1, file=as_upload(xlsx(list(rows))), validate_only=validate_only
            )

    return make


def refresh(upload) -> WorkbookUpload:
    upload.refresh_from_db()
    return upload


def test_it_runs_end_to_end_through_the_task(new_upload):
    upload = new_upload([("m:401", 1500, "RUN"), ("m:402", 20)])
    assert upload.status == "queued"
    tasks.workbook_parse_task.delay(upload.pk)
    upload = refresh(upload)
    assert upload.status == "applied" and upload.attempts == 1
    assert upload.started_at and upload.finished_at
    assert PendingLock.objects.filter(tx=upload.transaction).count() == 3


def test_it_queues_after_commit(operator1, xlsx, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = services.upload_create(uploader=operator1, file=as_upload(xlsx([["m:401", 1]])))
    assert refresh(upload).status == "queued" and len(callbacks) == 1
    callbacks[0]()
    assert refresh(upload).status == "applied"


def test_it_does_nothing_for_a_finished_upload(new_upload):
    upload = new_upload()
    services.upload_process(upload_id=upload.pk)
    assert services.upload_process(upload_id=upload.pk) is None
    assert ControlTransaction.objects.count() == 1 and refresh(upload).attempts == 1


def test_it_keeps_the_upload_queued_when_the_broker_is_down(
    client_for, operator1, xlsx, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.workbook_parse_task, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(operator1).post(
            "/workbooks/", {"file": as_upload(xlsx([["m:401", 1]]))}
        )
    assert response.status_code == 302
    upload = WorkbookUpload.objects.get()
    assert upload.status == "queued"

    monkeypatch.undo()
    assert services.uploads_requeue_stuck() == []  # not stuck long enough yet
    later = timezone.now() + timedelta(minutes=11)
    assert services.uploads_requeue_stuck(now=later) == [upload.pk]
    assert refresh(upload).status == "applied"


def test_it_re_runs_an_upload_whose_worker_died_mid_parse(new_upload):
    upload = new_upload()
    # A worker claimed it, saved a chunk of progress, then was killed.
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        status="parsing",
        attempts=1,
        rows_done=500,
        updated_at=timezone.now() - timedelta(hours=1),
    )
    tasks.workbooks_requeue_stuck()
    upload = refresh(upload)
    assert upload.status == "applied" and upload.attempts == 2
    assert ControlTransaction.objects.count() == 1


def test_it_gives_up_after_too_many_attempts(new_upload, settings):
    upload = new_upload()
    WorkbookUpload.objects.filter(pk=upload.pk).update(status="parsing", attempts=3)
    services.upload_process(upload_id=upload.pk)
    upload = refresh(upload)
    assert upload.status == "failed" and "after 3 attempts" in upload.message
    assert not ControlTransaction.objects.exists()


def test_it_links_the_transaction_a_dead_run_created_instead_of_locking_twice(
    new_upload, operator1
):
    upload = new_upload()
    tx = setpoint_batch_request(actor=operator1, changes={"m:401": {"target_speed": 1500}})
    WorkbookUpload.objects.filter(pk=upload.pk).update(status="parsing", tx_id=tx.tx_id)
    services.upload_process(upload_id=upload.pk)
    upload = refresh(upload)
    assert upload.status == "applied" and upload.transaction == tx
    assert ControlTransaction.objects.count() == 1


def test_a_run_restarted_while_the_first_may_still_be_in_control_reuses_its_transaction_id(
    new_upload, operator1
):
    """The first run recorded its transaction id and is still inside
    control (slow, not dead) when the sweeper restarts it: both ask for
    the same transaction, so the plant gets the setpoints once."""
    upload = new_upload()
    recorded = uuid.uuid4()
    WorkbookUpload.objects.filter(pk=upload.pk).update(status="parsing", attempts=1, tx_id=recorded)
    services.upload_process(upload_id=upload.pk)
    upload = refresh(upload)
    assert upload.status == "applied"
    assert [tx.tx_id for tx in ControlTransaction.objects.all()] == [recorded]
    # The first run, arriving second with the same id, makes no second one.
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            setpoint_batch_request(
                actor=operator1, changes={"m:401": {"target_speed": 1500}}, tx_id=recorded
            )
    assert ControlTransaction.objects.count() == 1


def test_a_stale_run_cannot_overwrite_a_newer_one(new_upload):
    upload = new_upload()
    WorkbookUpload.objects.filter(pk=upload.pk).update(status="parsing", attempts=1)
    stale = services._Run.parse(refresh(upload))
    WorkbookUpload.objects.filter(pk=upload.pk).update(attempts=2)
    assert services._parse_finish(stale, "failed", message="late") is None
    assert refresh(upload).status == "parsing"


def test_it_rejects_the_upload_when_control_refuses_the_batch(new_upload, monkeypatch):
    def refuse(**kwargs):
        raise ValidationError(
            "m:401 is in FAULT: setpoints are refused until it leaves that state."
        )

    monkeypatch.setattr(services, "_control_setpoint_batch_request", refuse)
    upload = new_upload()
    services.upload_process(upload_id=upload.pk)
    upload = refresh(upload)
    assert upload.status == "rejected" and upload.tx_id is None
    assert upload.message.startswith("No setpoint was changed: m:401 is in FAULT")
    assert not PendingLock.objects.exists()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RuntimeError("boom at 0x7f"), "error on our side"),
        (SoftTimeLimitExceeded(), "took too long"),
    ],
)
def test_it_fails_cleanly_without_leaking_internals(new_upload, monkeypatch, error, message):
    def explode(*args, **kwargs):
        raise error

    monkeypatch.setattr(parsing, "parse_workbook", explode)
    upload = new_upload()
    services.upload_process(upload_id=upload.pk)
    upload = refresh(upload)
    assert upload.status == "failed" and message in upload.message
    assert "boom" not in upload.message and "Traceback" not in upload.message


def test_it_fails_cleanly_when_the_stored_file_is_gone(new_upload):
    upload = new_upload()
    services.upload_path(upload).unlink()
    services.upload_process(upload_id=upload.pk)
    assert refresh(upload).status == "failed"


def saved_progress(new_upload, monkeypatch, rows=1100) -> list[int]:
    """rows_done as stored after each chunk the parse reports."""
    seen = []
    original = services._Run.progress

    def spy(self, **fields):
        original(self, **fields)
        seen.append(WorkbookUpload.objects.values_list("rows_done", flat=True).get())

    monkeypatch.setattr(services._Run, "progress", spy)
    upload = new_upload([(f"m:{401 + n % 4}", n % 3000) for n in range(rows)], validate_only=True)
    services.upload_process(upload_id=upload.pk)
    assert refresh(upload).rows_total == rows
    return seen


def test_it_saves_progress_per_chunk(new_upload, monkeypatch):
    monkeypatch.setattr(services, "PROGRESS_EVERY", 0)
    assert saved_progress(new_upload, monkeypatch) == [500, 1000, 1100]


def test_a_fast_parse_saves_the_first_and_last_chunk_not_every_one(new_upload, monkeypatch):
    monkeypatch.setattr(services, "PROGRESS_EVERY", 3600)
    assert saved_progress(new_upload, monkeypatch) == [500, 500, 1100]


def test_it_bounds_the_stored_errors(new_upload, monkeypatch):
    monkeypatch.setattr(services, "STORED_MESSAGES_LIMIT", 10)
    upload = new_upload([("bad", 1)] * 25, validate_only=True)
    services.upload_process(upload_id=upload.pk)
    upload = refresh(upload)
    assert len(upload.errors) == 10 and upload.summary["invalid"] == 25
    assert upload.summary["complete"] is False
