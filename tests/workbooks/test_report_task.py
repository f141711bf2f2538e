"""The error report task: queued when a parse ends, written to a private
file beside the uploads, its own state and progress on the upload, the
sweeper, and runs that fail, die or overlap."""

import stat
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone
from kombu.exceptions import OperationalError

from apps.workbooks import services, tasks, writers
from apps.workbooks.models import WorkbookUpload

from .conftest import as_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]
ROWS = [["m:401", 1500, "RUN"], ["m:402", "fast"], ["m:401", 900]]


def refresh(upload) -> WorkbookUpload:
    upload.refresh_from_db()
    return upload


@pytest.fixture
def parsed(operator1, xlsx, django_capture_on_commit_callbacks):
    """An upload stored, parsed and reported, each step run on commit."""

    def make(rows=ROWS, validate_only=False, **workbook) -> WorkbookUpload:
        with django_capture_on_commit_callbacks(execute=True):
            upload = services.upload_create(
                uploader=operator1,
                file=as_upload(xlsx(rows, **workbook)),
                validate_only=validate_only,
            )
        return refresh(upload)

    return make


def report_files(settings) -> list:
    reports = settings.WORKBOOK_UPLOAD_DIR / "reports"
    return sorted(p for p in reports.rglob("*") if p.is_file()) if reports.exists() else []


@pytest.mark.parametrize(("validate_only", "status"), [(False, "applied"), (True, "parsed")])
def test_it_queues_the_report_when_the_parse_ends_and_writes_it(
    operator1, xlsx, django_capture_on_commit_callbacks, settings, validate_only, status
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = services.upload_create(
            uploader=operator1, file=as_upload(xlsx(ROWS)), validate_only=validate_only
        )
    assert refresh(upload).report_status == ""
    with django_capture_on_commit_callbacks(execute=False) as after_parse:
        callbacks[0]()  # the parse task, queued on commit of the upload
    upload = refresh(upload)
    assert upload.status == status and upload.report_status == "preparing"
    assert upload.report_rows_done == 0 and not report_files(settings)

    for callback in after_parse:  # the report task, queued on commit of the parse
        callback()
    upload = refresh(upload)
    assert upload.report_status == "ready", upload.report_message
    assert upload.report_rows_done == upload.rows_total == 3
    path = services.upload_report_path(upload)
    assert report_files(settings) == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.is_relative_to(settings.WORKBOOK_UPLOAD_DIR)
    assert not path.is_relative_to(settings.MEDIA_ROOT) and not path.is_relative_to(
        settings.STATIC_ROOT
    )
    assert upload.original_filename.removesuffix(".xlsx") not in path.name


def test_it_writes_no_report_for_a_rejected_upload(parsed, settings):
    upload = parsed([["m:401"]], header=["Machine ID"])  # Invalid Template
    assert upload.status == "rejected" and upload.report_status == ""
    assert services.upload_report_build(upload_id=upload.pk) is None
    assert not report_files(settings)


def test_it_writes_no_report_for_an_upload_still_parsing(operator1, xlsx, settings):
    upload = WorkbookUpload.objects.create(
        uploader=operator1,
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
        status="parsing",
        report_status="preparing",
    )
    assert services.upload_report_build(upload_id=upload.pk) is None
    assert refresh(upload).report_status == "preparing" and not report_files(settings)


def snapshot(upload) -> dict:
    fields = ("status", "summary", "errors", "warnings", "changes", "transaction_id", "message")
    return {name: getattr(upload, name) for name in fields}


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RuntimeError("boom at 0x7f"), "error on our side"),
        (SoftTimeLimitExceeded(), "took too long"),
    ],
)
def test_a_failed_report_says_why_and_loses_nothing_else(
    parsed, monkeypatch, settings, error, message
):
    def explode(**kwargs):
        kwargs["target"].write(b"half a zip")
        raise error

    monkeypatch.setattr(writers, "error_report_write", explode)
    upload = parsed()
    assert upload.status == "applied" and upload.report_status == "failed"
    assert message in upload.report_message
    assert "boom" not in upload.report_message and "Traceback" not in upload.report_message
    assert upload.report_path == "" and not report_files(settings)
    assert services.upload_report_path(upload) is None

    monkeypatch.undo()  # nothing of the upload itself was touched by the failure
    fresh = parsed()
    expected, got = snapshot(fresh), snapshot(upload)
    assert got.pop("transaction_id") and expected.pop("transaction_id")
    assert got == expected


def test_a_report_fails_clearly_when_the_uploaded_file_is_gone(parsed, settings):
    upload = parsed()
    services.upload_path(upload).unlink()
    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="preparing")
    assert services.upload_report_build(upload_id=upload.pk) == "failed"
    upload = refresh(upload)
    assert upload.report_status == "failed" and upload.status == "applied"
    assert "no longer stored" in upload.report_message
    assert "Upload the workbook again" in upload.report_message


def test_it_saves_report_progress_while_writing(parsed, monkeypatch):
    monkeypatch.setattr(services, "PROGRESS_EVERY", 0)
    seen = []
    original = services._Run.progress

    def spy(self, **fields):
        original(self, **fields)
        if "report_rows_done" in fields:
            seen.append(WorkbookUpload.objects.values_list("report_rows_done", flat=True).get())

    monkeypatch.setattr(services._Run, "progress", spy)
    upload = parsed([[f"m:40{1 + n % 4}", n % 3000] for n in range(2500)], validate_only=True)
    assert seen == [1000, 2000]
    assert upload.report_status == "ready" and upload.report_rows_done == 2500


def test_it_throttles_report_progress_saves(parsed, monkeypatch):
    saved = []
    original = services._Run.update

    def spy(self, **fields):
        if self.touch == "report_updated_at":  # the report's run, not the parse's
            saved.append(fields)
        return original(self, **fields)

    monkeypatch.setattr(services._Run, "update", spy)
    monkeypatch.setattr(services, "PROGRESS_EVERY", 3600)
    upload = parsed([[f"m:40{1 + n % 4}", n % 3000] for n in range(2500)], validate_only=True)
    assert upload.report_status == "ready" and upload.report_rows_done == 2500
    # Within the hour no progress is saved: only the end of the run.
    assert [f.get("report_status") for f in saved] == ["ready"]


def test_it_keeps_the_report_preparing_when_the_broker_is_down_then_the_sweeper_sends_it(
    parsed, monkeypatch
):
    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.workbook_report_task, "apply_async", broker_down)
    upload = parsed()
    assert upload.status == "applied" and upload.report_status == "preparing"

    monkeypatch.undo()
    assert services.upload_reports_requeue_stuck() == []  # not stuck long enough yet
    later = timezone.now() + timedelta(minutes=11)
    assert services.upload_reports_requeue_stuck(now=later) == [upload.pk]
    assert refresh(upload).report_status == "ready"


def test_the_beat_sweeper_re_runs_a_report_whose_worker_died(parsed, settings):
    upload = parsed()
    killed = services.upload_report_path(upload)
    # A worker claimed it, wrote part of the file, then was killed.
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        report_status="preparing",
        report_rows_done=1,
        report_updated_at=timezone.now() - timedelta(hours=1),
    )
    tasks.workbooks_requeue_stuck()
    upload = refresh(upload)
    assert upload.report_status == "ready" and upload.report_attempts == 2
    # What the killed run left behind is deleted; one file, the new one.
    assert not killed.exists() and report_files(settings) == [services.upload_report_path(upload)]


def test_it_gives_up_on_a_report_after_too_many_attempts(parsed, settings):
    upload = parsed()
    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="preparing", report_attempts=3)
    services.upload_report_build(upload_id=upload.pk)
    upload = refresh(upload)
    assert upload.report_status == "failed" and "after 3 attempts" in upload.report_message
    assert not report_files(settings)


def test_a_stale_report_run_cannot_overwrite_a_newer_one(parsed, monkeypatch, settings):
    upload = parsed()
    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="preparing")
    write = writers.error_report_write
    calls = []

    def overtaken(**kwargs):
        # While this run writes, the sweeper gives up on it and a newer run
        # writes the report to the end.
        calls.append(1)
        if len(calls) == 1:
            assert services.upload_report_build(upload_id=upload.pk) == "ready"
        return write(**kwargs)

    monkeypatch.setattr(writers, "error_report_write", overtaken)
    assert services.upload_report_build(upload_id=upload.pk) is None
    upload = refresh(upload)
    assert upload.report_status == "ready"
    assert report_files(settings) == [services.upload_report_path(upload)]


def test_a_duplicate_delivery_leaves_a_ready_report_alone(parsed, settings):
    upload = parsed()
    path = services.upload_report_path(upload)
    tasks.workbook_report_task.delay(upload.pk)
    assert services.upload_report_path(refresh(upload)) == path and path.is_file()
    assert report_files(settings) == [path]


def test_asking_again_for_a_failed_report_queues_it(parsed, django_capture_on_commit_callbacks):
    upload = parsed()
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        report_status="failed", report_message="x", report_attempts=3, report_path=""
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.upload_report_request(upload=refresh(upload)) is True
    upload = refresh(upload)
    assert upload.report_status == "ready" and upload.report_message == ""
    assert upload.report_attempts == 1
    # Asked again while preparing: nothing more is queued.
    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="preparing")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.upload_report_request(upload=upload) is False
    assert callbacks == []
