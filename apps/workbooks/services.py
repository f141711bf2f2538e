"""Writes of the workbook app: storing an upload, queueing it, the parsing
run itself (called by the Celery task), and the sweeper."""

import hashlib
import logging
import math
import time
import uuid
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import live, parsing
from .models import STORED_MESSAGES_LIMIT, WorkbookUpload

logger = logging.getLogger(__name__)
Status = WorkbookUpload.Status
ReportStatus = WorkbookUpload.ReportStatus
# Seconds between two progress saves (and pushes) of a parse or report run:
# the period of the upload's live topic (apps/live/topics.py), so saving more
# often would tell no screen anything more.
PROGRESS_EVERY = 0.5


def uploads_dir() -> Path:
    """Where uploaded files live: under VAR_DIR, outside the web root and
    never under MEDIA_ROOT, so no URL can ever serve one back."""
    return Path(getattr(settings, "WORKBOOK_UPLOAD_DIR", Path(settings.VAR_DIR) / "uploads"))


def upload_path(upload: WorkbookUpload) -> Path:
    return uploads_dir() / upload.stored_path


def max_attempts() -> int:
    return settings.WORKBOOK_MAX_ATTEMPTS


def stuck_after() -> timedelta:
    return timedelta(seconds=settings.WORKBOOK_STUCK_AFTER_SECONDS)


# Upload
# ------


def upload_create(*, uploader, file, validate_only: bool = False, host: str = "") -> WorkbookUpload:
    """Store the file under a generated name, record it, and queue its
    parsing once the row is committed."""
    now = timezone.now()
    relative = f"{now:%Y/%m}/{uuid.uuid4().hex}.xlsx"
    target = uploads_dir() / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(target, "xb") as out:
        for chunk in file.chunks():
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    target.chmod(0o600)
    upload = WorkbookUpload.objects.create(
        uploader=uploader,
        original_filename=Path(file.name or "workbook.xlsx").name[:255],
        stored_path=relative,
        size=size,
        sha256=digest.hexdigest(),
        validate_only=validate_only,
        host=host[:255],
    )
    transaction.on_commit(lambda: upload_enqueue(upload_id=upload.pk))
    return upload


def upload_enqueue(*, upload_id: int) -> bool:
    """Hand the upload to a worker. A broker that is down must not fail the
    request: the upload stays queued and the sweeper sends it again."""
    from .tasks import workbook_parse_task

    try:
        workbook_parse_task.apply_async(args=[upload_id], retry=False)
    except Exception:
        logger.warning(
            "could not queue workbook upload %s; the sweeper retries", upload_id, exc_info=True
        )
        return False
    return True


def uploads_requeue_stuck(*, now=None) -> list[int]:
    """Queue again the uploads queued or parsing with no progress for a
    while (broker down at upload time, a worker killed mid-parse)."""
    now = now or timezone.now()
    idle = WorkbookUpload.objects.filter(
        status__in=WorkbookUpload.ACTIVE, updated_at__lt=now - stuck_after()
    )
    return _requeue(idle, touch="updated_at", enqueue=upload_enqueue, now=now)


def _requeue(idle, *, touch: str, enqueue, now) -> list[int]:
    """Queue again (200 a sweep at most) the uploads in `idle`; the ids queued."""
    requeued = []
    for upload_id in idle.order_by("pk").values_list("pk", flat=True)[:200]:
        # Touch it first, so the next sweep leaves it alone while it waits.
        WorkbookUpload.objects.filter(pk=upload_id).update(**{touch: now})
        if enqueue(upload_id=upload_id):
            requeued.append(upload_id)
    return requeued


# Parsing run
# -----------


def _control_setpoint_batch_request(*, upload: WorkbookUpload, batch: parsing.ParsedBatch):
    # The single call into control: one transaction holding every valid
    # row's pending locks, created atomically by control (all or nothing).
    from apps.control.services import setpoint_batch_request

    return setpoint_batch_request(
        actor=upload.uploader,
        changes=batch.valid_rows,
        source="workbook",
        tx_id=batch.tx_id,
        host=upload.host,
    )


def _existing_transaction(tx_id):
    from apps.control.models import ControlTransaction

    return ControlTransaction.objects.filter(tx_id=tx_id).first() if tx_id else None


def upload_process(*, upload_id: int) -> str | None:
    """Parse, validate and (unless validate only) apply one upload.

    Idempotent: a re-run starts from scratch. `attempts` is the fencing
    token: every write of a run is conditional on it, so a run that was
    given up on can never overwrite a newer one. Locks are created only at
    the very end, in one control transaction.
    """
    now = timezone.now()
    claimed = WorkbookUpload.objects.filter(pk=upload_id, status__in=WorkbookUpload.ACTIVE).update(
        status=Status.PARSING,
        started_at=now,
        updated_at=now,
        attempts=F("attempts") + 1,
        rows_done=0,
    )
    if not claimed:
        return None  # finished already (a duplicate delivery) or deleted
    upload = WorkbookUpload.objects.select_related("uploader").get(pk=upload_id)
    run = _Run(upload)
    live.upload_changed(upload_id)

    # A previous run got as far as control and died before recording it.
    if tx := _existing_transaction(upload.tx_id):
        return run.finish(Status.APPLIED, transaction=tx)
    if upload.attempts > max_attempts():
        return run.finish(
            Status.FAILED,
            message=f"The workbook could not be processed after {max_attempts()} attempts. "
            "Try uploading it again; if it keeps failing, contact support.",
        )
    try:
        path = upload_path(upload)
        parsing.check_extension(upload.original_filename)
        parsing.precheck(path, deep=True)
        batch = parsing.parse_workbook(
            path,
            index=parsing.MachineIndex.for_user(upload.uploader),
            on_chunk=run.progress,
            max_messages=STORED_MESSAGES_LIMIT,
        )
    except parsing.WorkbookRejected as exc:
        return run.finish(Status.REJECTED, message=exc.message)
    except SoftTimeLimitExceeded:
        return run.finish(
            Status.FAILED, message="The workbook took too long to process; split it in parts."
        )
    except Exception:
        logger.exception("workbook upload %s failed", upload_id)
        return run.finish(
            Status.FAILED,
            message="The workbook could not be processed because of an error on our side. "
            "It has been logged; try again later.",
        )

    results = {
        "summary": batch.summary | {"header_row": batch.header_row, "sheet": batch.sheet},
        "errors": batch.errors,
        "warnings": batch.warnings,
        "changes": batch.valid_rows,
        "rows_total": batch.rows_total,
        "rows_done": batch.rows_total,
    }
    results["summary"]["complete"] = batch.complete
    if upload.validate_only or not batch.valid_rows:
        return run.finish(Status.PARSED, **results)
    # Record the transaction id first: a run that dies after control
    # committed is recognised by the next one instead of locking twice.
    if not run.update(tx_id=batch.tx_id, **results):
        return None
    try:
        tx = _control_setpoint_batch_request(upload=upload, batch=batch)
    except (PermissionDenied, ValidationError) as exc:
        messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
        return run.finish(
            Status.REJECTED,
            tx_id=None,
            message="No setpoint was changed: " + " ".join(messages),
        )
    except Exception:
        logger.exception("control refused workbook upload %s unexpectedly", upload_id)
        if tx := _existing_transaction(batch.tx_id):
            return run.finish(Status.APPLIED, transaction=tx)
        return run.finish(
            Status.FAILED,
            tx_id=None,
            message="The setpoints could not be requested because of an error on our side; "
            "nothing was changed. Try again later.",
        )
    return run.finish(Status.APPLIED, transaction=tx)


class _ProgressClock:
    """Says when a run's progress is worth saving: at most every
    PROGRESS_EVERY seconds. A 500-row chunk parses in ~5 ms; a save and a
    push per chunk would cost more than the parse."""

    def __init__(self, *, due_at_once: bool):
        self.saved_at = -math.inf if due_at_once else time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.saved_at < PROGRESS_EVERY:
            return False
        self.saved_at = now
        return True


class _Run:
    def __init__(self, upload: WorkbookUpload):
        self.upload_id = upload.pk
        self.attempt = upload.attempts
        # The first chunk is saved at once, so the page shows the total early.
        self.clock = _ProgressClock(due_at_once=True)

    def update(self, **fields) -> bool:
        fields["updated_at"] = timezone.now()
        return bool(
            WorkbookUpload.objects.filter(
                pk=self.upload_id, status=Status.PARSING, attempts=self.attempt
            ).update(**fields)
        )

    def progress(self, rows_done: int, rows_total: int | None) -> None:
        """Saved and pushed at chunk boundaries when the clock says so, and
        always at the last."""
        last = rows_total is not None and rows_done >= rows_total
        if not self.clock.due() and not last:
            return
        total = max(rows_total, rows_done) if rows_total is not None else None
        if self.update(rows_done=rows_done, rows_total=total):
            live.upload_changed(self.upload_id)

    def finish(self, status: str, **fields) -> str | None:
        reported = status in WorkbookUpload.REPORTED
        if reported:  # every row was checked: queue its report with the result
            fields.update(_report_queued_fields(timezone.now()))
        if self.update(status=status, finished_at=timezone.now(), **fields):
            live.upload_changed(self.upload_id)
            if reported:
                transaction.on_commit(lambda: upload_report_enqueue(upload_id=self.upload_id))
            return status
        return None


# Error report
# ------------
# Written by its own task once a parse run has checked every row, to a file
# beside the uploads; the download serves that file. Its state lives in the
# report_* fields of the upload, apart from the parse's.


def upload_report_path(upload: WorkbookUpload) -> Path | None:
    """The stored report of `upload` when it is ready, else None."""
    if upload.report_status != ReportStatus.READY or not upload.report_path:
        return None
    return uploads_dir() / upload.report_path


def _report_queued_fields(now) -> dict:
    return {
        "report_status": ReportStatus.PREPARING,
        "report_rows_done": 0,
        "report_message": "",
        "report_attempts": 0,
        "report_updated_at": now,
    }


def upload_report_enqueue(*, upload_id: int) -> bool:
    """Hand the report to a worker; as for parsing, a broker that is down
    leaves it preparing and the sweeper sends it again."""
    from .tasks import workbook_report_task

    try:
        workbook_report_task.apply_async(args=[upload_id], retry=False)
    except Exception:
        logger.warning(
            "could not queue the report of upload %s; the sweeper retries", upload_id, exc_info=True
        )
        return False
    return True


def upload_report_request(*, upload: WorkbookUpload) -> bool:
    """Queue the report of a checked upload that has none ready: parsed
    before reports were kept, a failed report, or a stored report that is
    gone. False when one is being prepared already (or there are no rows)."""
    requestable = [ReportStatus.NONE, ReportStatus.FAILED, ReportStatus.READY]
    now = timezone.now()
    queued = WorkbookUpload.objects.filter(
        pk=upload.pk, status__in=WorkbookUpload.REPORTED, report_status__in=requestable
    ).update(**_report_queued_fields(now))
    if not queued:
        return False
    transaction.on_commit(lambda: upload_report_enqueue(upload_id=upload.pk))
    transaction.on_commit(lambda: live.upload_changed(upload.pk))
    return True


def upload_reports_requeue_stuck(*, now=None) -> list[int]:
    """Queue again the reports preparing with no sign of life for a while
    (broker down when queued, a worker killed mid-write)."""
    now = now or timezone.now()
    idle = WorkbookUpload.objects.filter(
        report_status=ReportStatus.PREPARING, report_updated_at__lt=now - stuck_after()
    )
    return _requeue(idle, touch="report_updated_at", enqueue=upload_report_enqueue, now=now)


def upload_report_build(*, upload_id: int) -> str | None:
    """Write the report of one checked upload: its stored file checked
    again with the same rules, row by row, so the report lists every
    message however many were stored with the upload.

    Each run writes a new file under a generated name and records it at
    once, so the next run deletes what a killed one left behind; the file
    is served only once the run has closed it and marked it ready.
    """
    from . import writers

    now = timezone.now()
    run_id = uuid.uuid4()
    relative = f"reports/{now:%Y/%m}/{uuid.uuid4().hex}.xlsx"
    previous = (
        WorkbookUpload.objects.filter(pk=upload_id).values_list("report_path", flat=True).first()
    )
    claimed = WorkbookUpload.objects.filter(
        pk=upload_id, status__in=WorkbookUpload.REPORTED, report_status=ReportStatus.PREPARING
    ).update(
        report_run=run_id,
        report_path=relative,
        report_attempts=F("report_attempts") + 1,
        report_rows_done=0,
        report_updated_at=now,
    )
    if not claimed:
        return None  # ready already (a duplicate delivery), not asked for, or deleted
    if previous:
        (uploads_dir() / previous).unlink(missing_ok=True)
    upload = WorkbookUpload.objects.select_related("uploader").get(pk=upload_id)
    run = _ReportRun(upload_id, run_id)
    live.upload_changed(upload_id)
    target = uploads_dir() / relative
    if upload.report_attempts > max_attempts():
        return run.fail(
            f"The report could not be prepared after {max_attempts()} attempts. "
            "Try again later; if it keeps failing, contact support."
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Created private (0600, like the upload) before a byte is written.
        target.touch(mode=0o600, exist_ok=False)
        with open(target, "wb") as out:
            rows = writers.error_report_write(
                path=upload_path(upload),
                index=parsing.MachineIndex.for_user(upload.uploader),
                target=out,
                on_progress=run.progress,
            )
    except (parsing.WorkbookRejected, FileNotFoundError):
        target.unlink(missing_ok=True)
        return run.fail(
            "The report cannot be prepared: the uploaded file is no longer stored or "
            "can no longer be read. Upload the workbook again for a new report."
        )
    except SoftTimeLimitExceeded:
        target.unlink(missing_ok=True)
        return run.fail("The report took too long to prepare; try again later.")
    except Exception:
        logger.exception("the report of workbook upload %s failed", upload_id)
        target.unlink(missing_ok=True)
        return run.fail(
            "The report could not be prepared because of an error on our side. "
            "It has been logged; try again later."
        )
    if run.update(report_status=ReportStatus.READY, report_rows_done=rows):
        live.upload_changed(upload_id)
        return ReportStatus.READY
    target.unlink(missing_ok=True)  # a newer run took over
    return None


class _ReportRun:
    def __init__(self, upload_id: int, run_id: uuid.UUID):
        self.upload_id = upload_id
        self.run_id = run_id
        self.clock = _ProgressClock(due_at_once=False)

    def update(self, **fields) -> bool:
        fields["report_updated_at"] = timezone.now()
        return bool(
            WorkbookUpload.objects.filter(
                pk=self.upload_id, report_status=ReportStatus.PREPARING, report_run=self.run_id
            ).update(**fields)
        )

    def progress(self, rows_done: int) -> None:
        if not self.clock.due():
            return
        if self.update(report_rows_done=rows_done):
            live.upload_changed(self.upload_id)

    def fail(self, message: str) -> str | None:
        if self.update(report_status=ReportStatus.FAILED, report_message=message, report_path=""):
            live.upload_changed(self.upload_id)
            return ReportStatus.FAILED
        return None
