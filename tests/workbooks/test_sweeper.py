"""The beat sweeper and the runs' heartbeat: a parse or report whose
heartbeat stopped (its worker lost) is restarted, the page saying "worker
lost, restarting" meanwhile; a run that beats is left alone, however slow;
after WORKBOOK_MAX_ATTEMPTS runs the upload fails with a message."""

import time
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.control.models import ControlTransaction
from apps.workbooks import live, parsing, services, tasks
from apps.workbooks.models import WorkbookUpload

from .conftest import as_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]
RESTARTING = "Worker lost, restarting"


@pytest.fixture
def new_upload(operator1, xlsx, django_capture_on_commit_callbacks):
    """An upload stored and queued, its task not run yet."""

    def make(rows=(("m:401", 1500),), validate_only=False) -> WorkbookUpload:
        with django_capture_on_commit_callbacks(execute=False):
            return services.upload_create(
                uploader=operator1, file=as_upload(xlsx(list(rows))), validate_only=validate_only
            )

    return make


@pytest.fixture
def reported(new_upload, django_capture_on_commit_callbacks) -> WorkbookUpload:
    """An upload parsed and its report written (ahead of `held` and `pushed`)."""
    upload = new_upload()
    with django_capture_on_commit_callbacks(execute=True):
        services.upload_process(upload_id=upload.pk)
    return refresh(upload)


@pytest.fixture
def held(monkeypatch):
    """The tasks the sweeper queues, held instead of run, so the page can be
    seen while the upload waits for a worker."""
    sent = []
    for task in (tasks.workbook_parse_task, tasks.workbook_report_task):
        monkeypatch.setattr(
            task, "apply_async", lambda args, task=task, **kw: sent.append((task.name, args[0]))
        )
    return sent


@pytest.fixture
def pushed(monkeypatch):
    """The uploads announced on their live topic."""
    seen = []
    monkeypatch.setattr(live, "upload_changed", seen.append)
    return seen


def refresh(upload) -> WorkbookUpload:
    upload.refresh_from_db()
    return upload


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def parse_lost(upload, *, attempts=1, silent=31) -> WorkbookUpload:
    """As a worker killed mid-parse leaves it: parsing, heartbeat silent."""
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        status="parsing", attempts=attempts, rows_done=500, updated_at=ago(silent)
    )
    return refresh(upload)


def report_lost(upload, *, attempts=1, silent=31) -> WorkbookUpload:
    """As a worker killed mid-write leaves a report: claimed, heartbeat silent."""
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        report_status="preparing",
        report_run=uuid.uuid4(),
        report_attempts=attempts,
        report_rows_done=1,
        report_updated_at=ago(silent),
    )
    return refresh(upload)


def status_region(upload) -> str:
    html, _ = live.upload_regions(upload.pk)[f"upload-status-{upload.pk}"]
    return html


def report_region(upload) -> str:
    html, _ = live.upload_regions(upload.pk)[f"upload-report-{upload.pk}"]
    return html


# Parses
# ------


def test_it_restarts_a_parse_whose_heartbeat_stopped_and_the_page_says_so(
    new_upload, held, pushed, client_for, operator1
):
    upload = parse_lost(new_upload())
    assert services.uploads_requeue_stuck() == [upload.pk]
    upload = refresh(upload)
    assert upload.status == "queued" and upload.restarting
    assert held == [(tasks.workbook_parse_task.name, upload.pk)]
    assert pushed == [upload.pk]  # the page learns it at once, through the upload topic
    assert RESTARTING in status_region(upload) and "attempt 2 of 3" in status_region(upload)
    page = client_for(operator1).get(reverse("workbooks:upload-detail", args=[upload.pk]))
    assert RESTARTING in page.content.decode()

    # A new worker takes it: the run starts over and the notice goes.
    assert services.upload_process(upload_id=upload.pk) == "applied"
    upload = refresh(upload)
    assert upload.attempts == 2 and not upload.restarting
    assert RESTARTING not in status_region(upload)
    assert ControlTransaction.objects.count() == 1


def test_it_leaves_a_parse_that_beats_alone(new_upload, held, pushed):
    upload = parse_lost(new_upload(), silent=10)
    assert services.uploads_requeue_stuck() == []
    upload = refresh(upload)
    assert upload.status == "parsing" and upload.attempts == 1
    assert held == [] and pushed == []
    assert RESTARTING not in status_region(upload)


def test_the_page_says_the_worker_was_lost_before_any_sweep_ran(new_upload, reported):
    # No worker is up to run the sweeper: the page still tells the truth.
    upload = parse_lost(new_upload())
    assert RESTARTING in status_region(upload) and "attempt 2 of 3" in status_region(upload)
    assert RESTARTING not in status_region(parse_lost(upload, silent=10))
    assert RESTARTING not in status_region(parse_lost(upload, attempts=3))  # to fail, not restart
    report = report_lost(reported)
    assert RESTARTING in report_region(report)
    assert RESTARTING not in report_region(report_lost(report, silent=10))


def test_a_queued_upload_waiting_its_turn_is_not_sent_again_at_the_heartbeat_limit(
    new_upload, held
):
    upload = new_upload()
    WorkbookUpload.objects.filter(pk=upload.pk).update(updated_at=ago(120))
    assert services.uploads_requeue_stuck() == [] and held == []
    assert not refresh(upload).restarting


def test_it_fails_a_parse_whose_worker_was_lost_on_every_attempt(new_upload, held, pushed):
    upload = parse_lost(new_upload(), attempts=3)
    assert services.uploads_requeue_stuck() == []
    upload = refresh(upload)
    assert upload.status == "failed" and upload.finished_at is not None
    assert "the worker reading it was lost 3 times" in upload.message
    assert "Try uploading it again" in upload.message
    assert held == [] and pushed == [upload.pk]
    assert upload.message in status_region(upload) and RESTARTING not in status_region(upload)
    assert not ControlTransaction.objects.exists()


def test_a_lost_run_that_comes_back_cannot_write_over_its_restart(new_upload, held):
    upload = parse_lost(new_upload())
    lost_run = services._Run.parse(upload)
    services.uploads_requeue_stuck()
    # The "lost" worker was only frozen; it resumes and tries to go on.
    assert lost_run.update(rows_done=900) is False
    assert services._parse_finish(lost_run, "failed", message="late") is None
    upload = refresh(upload)
    assert upload.status == "queued" and upload.rows_done == 500


def test_the_beat_runs_the_sweeper_well_within_the_heartbeat_limit(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["workbooks-requeue-stuck"]
    assert entry["task"] == tasks.workbooks_requeue_stuck.name
    assert entry["schedule"] <= settings.WORKBOOK_HEARTBEAT_STALE_SECONDS / 2
    assert settings.WORKBOOK_HEARTBEAT_STALE_SECONDS == 30


# Error reports
# -------------


def test_it_restarts_a_report_whose_heartbeat_stopped_and_the_page_says_so(reported, held, pushed):
    upload = report_lost(reported)
    left_behind = services.uploads_dir() / upload.report_path
    assert services.upload_reports_requeue_stuck() == [upload.pk]
    upload = refresh(upload)
    assert upload.report_status == "preparing" and upload.report_restarting
    assert held == [(tasks.workbook_report_task.name, upload.pk)] and pushed == [upload.pk]
    assert RESTARTING in report_region(upload) and "attempt 2 of 3" in report_region(upload)

    assert services.upload_report_build(upload_id=upload.pk) == "ready"
    upload = refresh(upload)
    assert upload.report_attempts == 2 and not upload.report_restarting
    assert not left_behind.exists() and services.upload_report_path(upload).is_file()
    assert RESTARTING not in report_region(upload)


def test_it_leaves_a_report_run_that_beats_alone(reported, held, pushed):
    upload = report_lost(reported, silent=10)
    assert services.upload_reports_requeue_stuck() == []
    assert refresh(upload).report_run == upload.report_run
    assert held == [] and pushed == []


def test_a_report_waiting_for_a_worker_is_not_taken_for_lost(reported, held):
    upload = reported
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        report_status="preparing", report_run=None, report_attempts=0, report_updated_at=ago(120)
    )
    assert services.upload_reports_requeue_stuck() == [] and held == []


def test_it_fails_a_report_whose_worker_was_lost_on_every_attempt(reported, held, pushed):
    upload = report_lost(reported, attempts=3)
    left_behind = services.uploads_dir() / upload.report_path
    assert services.upload_reports_requeue_stuck() == []
    upload = refresh(upload)
    assert upload.report_status == "failed" and upload.status == "applied"
    assert "the worker writing it was lost 3 times" in upload.report_message
    assert upload.report_path == "" and not left_behind.exists()
    assert held == [] and pushed == [upload.pk]
    assert upload.report_message in report_region(upload)


# The heartbeat
# -------------


@pytest.fixture
def slow_rows(monkeypatch):
    """Rows that take 5 ms each to check, with the heartbeat and progress
    stored as each row is reached."""
    seen = []
    check = parsing.RowValidator.__call__

    def slow(self, number, values):
        time.sleep(0.005)
        seen.append(
            WorkbookUpload.objects.values_list(
                "updated_at", "rows_done", "report_updated_at", "report_rows_done"
            ).get()
        )
        return check(self, number, values)

    monkeypatch.setattr(parsing.RowValidator, "__call__", slow)
    monkeypatch.setattr(services, "HEARTBEAT_EVERY", 0.05)
    monkeypatch.setattr(services, "PROGRESS_EVERY", 3600)
    return seen


ROWS = [(f"m:{401 + n % 4}", n) for n in range(80)]  # under a chunk: no progress until the end


def test_a_parse_whose_rows_come_slowly_keeps_beating_while_its_progress_stands(
    new_upload, slow_rows
):
    upload = new_upload(ROWS, validate_only=True)
    services.upload_process(upload_id=upload.pk)
    beats = {heartbeat for heartbeat, rows_done, *_ in slow_rows}
    assert {rows_done for _, rows_done, *_ in slow_rows} == {0}
    assert len(beats) >= 3  # 0.4 s of rows, a beat every 0.05 s
    assert refresh(upload).status == "parsed"


def test_a_report_whose_rows_come_slowly_keeps_beating_while_its_progress_stands(
    new_upload, slow_rows, django_capture_on_commit_callbacks
):
    upload = new_upload(ROWS, validate_only=True)
    with django_capture_on_commit_callbacks(execute=False) as report_task:
        services.upload_process(upload_id=upload.pk)
    slow_rows.clear()
    report_task[0]()
    beats = {heartbeat for *_, heartbeat, rows_done in slow_rows}
    assert {rows_done for *_, rows_done in slow_rows} == {0}
    assert len(beats) >= 3
    assert refresh(upload).report_status == "ready"
