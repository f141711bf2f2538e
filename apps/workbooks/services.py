"""Writes of the workbook app: storing an upload, queueing it, the parsing
run itself (called by the Celery task), its error report, and the sweeper."""

import hashlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import audit_record_many

from . import live, parsing, precheck
from .models import STORED_MESSAGES_LIMIT, WorkbookUpload

logger = logging.getLogger(__name__)
Status = WorkbookUpload.Status
ReportStatus = WorkbookUpload.ReportStatus
# Seconds between two progress saves (and pushes) of a parse or report run:
# the period of the upload's live topic (apps/live/topics.py), so saving more
# often would tell no screen anything more.
PROGRESS_EVERY = 0.5
# Seconds between two heartbeats of a run whose progress does not move (a
# slow row read, a long step); at most a fifth of the stale limit, so a beat
# delayed by a busy database does not make a live run look lost.
HEARTBEAT_EVERY = 2.0


def uploads_dir() -> Path:
    return Path(settings.WORKBOOK_UPLOAD_DIR)


def upload_path(upload: WorkbookUpload) -> Path:
    return uploads_dir() / upload.stored_path


def max_attempts() -> int:
    return settings.WORKBOOK_MAX_ATTEMPTS


def stuck_after() -> timedelta:
    return timedelta(seconds=settings.WORKBOOK_STUCK_AFTER_SECONDS)


def heartbeat_stale_after() -> timedelta:
    return timedelta(seconds=settings.WORKBOOK_HEARTBEAT_STALE_SECONDS)


def _heartbeat_every() -> float:
    return min(HEARTBEAT_EVERY, settings.WORKBOOK_HEARTBEAT_STALE_SECONDS / 5)


# Upload
# ------


def upload_create(*, uploader, file, validate_only: bool = False, host: str = "") -> WorkbookUpload:
    """Store the file under a generated name, record it with its audit
    events, and queue its parsing once the row is committed."""
    now = timezone.now()
    relative = f"{now:%Y/%m}/{uuid.uuid4().hex}.xlsx"
    target = uploads_dir() / relative
    sha256, size = _store(file, target)
    try:
        with transaction.atomic():
            upload = WorkbookUpload.objects.create(
                uploader=uploader,
                original_filename=Path(file.name or "workbook.xlsx").name[:255],
                stored_path=relative,
                size=size,
                sha256=sha256,
                validate_only=validate_only,
                host=host[:255],
            )
            _audit_upload(upload)
    except BaseException:
        target.unlink(missing_ok=True)  # no row points at it
        raise
    transaction.on_commit(lambda: upload_enqueue(upload_id=upload.pk))
    return upload


def _store(file, target: Path) -> tuple[str, int]:
    """Write the upload to `target`, private (0600); its sha256 and size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(target, "xb") as out:
        for chunk in file.chunks():
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    target.chmod(0o600)
    return digest.hexdigest(), size


def _audit_upload(upload: WorkbookUpload) -> None:
    """Who uploaded which file, one field per event. The field names the
    upload (`upload:12.sha256`), so the trail leads to its row and the
    control transaction it became; the hash identifies the very file."""
    file = {"filename": upload.original_filename, "size": upload.size, "sha256": upload.sha256}
    audit_record_many(
        [
            {
                "action": "workbook_upload",
                "actor": upload.uploader,
                "host": upload.host,
                "field": f"{upload.topic}.{name}",
                "new_value": value,
            }
            for name, value in file.items()
        ]
    )


def upload_enqueue(*, upload_id: int) -> bool:
    """Hand the upload's parse to a worker."""
    from .tasks import workbook_parse_task

    return _enqueue(workbook_parse_task, upload_id=upload_id, what="workbook upload")


def upload_report_enqueue(*, upload_id: int) -> bool:
    """Hand the upload's error report to a worker."""
    from .tasks import workbook_report_task

    return _enqueue(workbook_report_task, upload_id=upload_id, what="the report of upload")


def _enqueue(task, *, upload_id: int, what: str) -> bool:
    # A broker that is down must not fail the request: the row stays queued
    # (or preparing) and the sweeper sends it again.
    try:
        task.apply_async(args=[upload_id], retry=False)
    except Exception:
        logger.warning("could not queue %s %s; the sweeper retries", what, upload_id, exc_info=True)
        return False
    return True


def uploads_requeue_stuck(*, now=None) -> list[int]:
    """Queue again the uploads no worker took for a while (broker down at
    upload time), and restart the parses whose heartbeat stopped (a worker
    killed mid-parse); the ids queued.

    Only a run's heartbeat tells a lost run from a slow one: a queued
    upload may wait behind others, so it is sent again only much later.
    """
    now = now or timezone.now()
    waiting = WorkbookUpload.objects.filter(
        status=Status.QUEUED, updated_at__lt=now - stuck_after()
    )
    requeued = _requeue(waiting, touch="updated_at", enqueue=upload_enqueue, now=now)
    # While parsing, updated_at is the run's heartbeat (see _Run).
    lost = WorkbookUpload.objects.filter(
        status=Status.PARSING, updated_at__lt=now - heartbeat_stale_after()
    )
    for upload_id, attempts in lost.order_by("pk").values_list("pk", "attempts")[:200]:
        # Each write is conditional on the run being still silent and still
        # the same attempt: a run that beat meanwhile is left alone.
        run = lost.filter(pk=upload_id, attempts=attempts)
        if _parse_restart(run, upload_id=upload_id, attempts=attempts, now=now):
            requeued.append(upload_id)
    return requeued


def _parse_restart(lost, *, upload_id: int, attempts: int, now) -> bool:
    """Queue a lost parse again, the page saying so meanwhile, or fail it
    once it has had all its attempts (a workbook that kills its worker
    would otherwise loop for ever). True when queued again."""
    if attempts >= max_attempts():
        message = (
            f"The workbook could not be processed: the worker reading it was lost "
            f"{attempts} times. Try uploading it again; if it keeps failing, contact support."
        )
        if lost.update(status=Status.FAILED, message=message, finished_at=now, updated_at=now):
            logger.error("workbook upload %s: worker lost %s times; failed", upload_id, attempts)
            live.upload_changed(upload_id)
        return False
    # Back to queued: the lost run's writes no longer match its fence.
    if not lost.update(status=Status.QUEUED, updated_at=now):
        return False
    logger.warning("workbook upload %s: worker lost mid-parse; restarting", upload_id)
    live.upload_changed(upload_id)
    return upload_enqueue(upload_id=upload_id)


def _requeue(idle, *, touch: str, enqueue, now) -> list[int]:
    """Queue again (200 a sweep at most) the uploads in `idle`; the ids queued."""
    requeued = []
    for upload_id in idle.order_by("pk").values_list("pk", flat=True)[:200]:
        # Touch it first, so the next sweep leaves it alone while it waits.
        WorkbookUpload.objects.filter(pk=upload_id).update(**{touch: now})
        if enqueue(upload_id=upload_id):
            requeued.append(upload_id)
    return requeued


# A run
# -----


@dataclass
class _Run:
    """One run over an upload: its parse, or the writing of its report.

    Every write is conditional on the run's fencing token (`fence`: the
    parse's attempt number, the report's run id), so a run that was given
    up on can never overwrite a newer one. Each write also touches the
    run's heartbeat (`touch`), which the sweeper reads: silent for
    WORKBOOK_HEARTBEAT_STALE_SECONDS, the run's worker is taken for lost.
    Progress is saved (and pushed) at most every PROGRESS_EVERY seconds: a
    500-row chunk parses in ~5 ms, and a save and a push per chunk would
    cost more than the parse.

    Why beats come from the run's own loops (every row, and around each
    long step) rather than from a thread: a thread would keep beating for a
    run stuck for ever, and would need a database connection of its own.
    """

    upload_id: int
    fence: dict
    touch: str
    saved_at: float = -math.inf
    beaten_at: float = field(default_factory=time.monotonic)
    beat_every: float = field(default_factory=_heartbeat_every)

    @classmethod
    def parse(cls, upload: WorkbookUpload) -> "_Run":
        # The first chunk is saved at once, so the page shows the total early.
        fence = {"status": Status.PARSING, "attempts": upload.attempts}
        return cls(upload.pk, fence, "updated_at", saved_at=-math.inf)

    @classmethod
    def report(cls, upload_id: int, run_id: uuid.UUID) -> "_Run":
        fence = {"report_status": ReportStatus.PREPARING, "report_run": run_id}
        return cls(upload_id, fence, "report_updated_at", saved_at=time.monotonic())

    def update(self, **fields) -> bool:
        fields[self.touch] = timezone.now()
        self.beaten_at = time.monotonic()
        rows = WorkbookUpload.objects.filter(pk=self.upload_id, **self.fence).update(**fields)
        return bool(rows)

    def save(self, **fields) -> bool:
        """Update, and tell the upload's page when the run still holds it."""
        if not self.update(**fields):
            return False
        live.upload_changed(self.upload_id)
        return True

    def progress(self, *, last: bool = False, **fields) -> None:
        now = time.monotonic()
        if now - self.saved_at < PROGRESS_EVERY and not last:
            return
        self.saved_at = now
        self.save(**fields)

    def beat(self) -> None:
        """Tell the sweeper the run is alive; cheap enough to call per row
        (it writes only every `beat_every` seconds, and tells no screen)."""
        if time.monotonic() - self.beaten_at >= self.beat_every:
            self.update()


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
    token of the run (see `_Run`). Locks are created only at the very end,
    in one control transaction.
    """
    upload = _parse_claim(upload_id)
    if upload is None:
        return None  # finished already (a duplicate delivery) or deleted
    run = _Run.parse(upload)
    live.upload_changed(upload_id)

    # A previous run got as far as control and died before recording it.
    if tx := _existing_transaction(upload.tx_id):
        return _parse_finish(run, Status.APPLIED, transaction=tx)
    if upload.attempts > max_attempts():
        return _parse_finish(
            run,
            Status.FAILED,
            message=f"The workbook could not be processed after {max_attempts()} attempts. "
            "Try uploading it again; if it keeps failing, contact support.",
        )
    try:
        batch = _parse(upload, run)
    except Exception as exc:
        return _parse_finish(run, *_parse_problem(exc, upload_id=upload_id))
    results = _batch_results(batch)
    if upload.validate_only or not batch.valid_rows:
        return _parse_finish(run, Status.PARSED, **results)
    return _apply(upload, run, batch, results)


def _parse_claim(upload_id: int) -> WorkbookUpload | None:
    """Take the upload for a new run (the next attempt), or None."""
    now = timezone.now()
    claimed = WorkbookUpload.objects.filter(pk=upload_id, status__in=WorkbookUpload.ACTIVE).update(
        status=Status.PARSING,
        started_at=now,
        updated_at=now,
        attempts=F("attempts") + 1,
        rows_done=0,
    )
    if not claimed:
        return None
    return WorkbookUpload.objects.select_related("uploader").get(pk=upload_id)


def _parse(upload: WorkbookUpload, run: _Run) -> parsing.ParsedBatch:
    path = upload_path(upload)
    precheck.check_extension(upload.original_filename)
    precheck.precheck(path, deep=True)  # inflates every part: seconds for a large file
    run.beat()
    index = parsing.MachineIndex.for_user(upload.uploader)
    run.beat()

    def on_chunk(rows_done: int, rows_total: int | None) -> None:
        # Saved at chunk boundaries when the run's clock says so, and always at the last.
        last = rows_total is not None and rows_done >= rows_total
        total = max(rows_total, rows_done) if rows_total is not None else None
        run.progress(last=last, rows_done=rows_done, rows_total=total)

    return parsing.parse_workbook(
        path,
        index=index,
        on_chunk=on_chunk,
        on_row=run.beat,
        max_messages=STORED_MESSAGES_LIMIT,
    )


def _parse_problem(exc: Exception, *, upload_id: int) -> tuple[str, str]:
    """The status and the message of a parse that did not get through."""
    if isinstance(exc, precheck.WorkbookRejected):
        return Status.REJECTED, exc.message
    if isinstance(exc, SoftTimeLimitExceeded):
        return Status.FAILED, "The workbook took too long to process; split it in parts."
    logger.error("workbook upload %s failed", upload_id, exc_info=exc)
    return (
        Status.FAILED,
        "The workbook could not be processed because of an error on our side. "
        "It has been logged; try again later.",
    )


def _batch_results(batch: parsing.ParsedBatch) -> dict:
    """The upload's fields for a batch whose rows were all checked."""
    summary = batch.summary | {"header_row": batch.header_row, "sheet": batch.sheet}
    summary["complete"] = batch.complete
    return {
        "summary": summary,
        "errors": batch.errors,
        "warnings": batch.warnings,
        "changes": batch.valid_rows,
        "rows_total": batch.rows_total,
        "rows_done": batch.rows_total,
    }


def _apply(upload: WorkbookUpload, run: _Run, batch: parsing.ParsedBatch, results) -> str | None:
    """Hand the valid rows to control and record how that ended."""
    # Record the transaction id first: a run that dies after control
    # committed is recognised by the next one instead of locking twice.
    # A run restarted while an earlier one may still be inside control
    # (slow, not dead) reuses that run's id: whichever commits second
    # collides on it and finds the first one's transaction.
    if upload.tx_id:
        batch.tx_id = upload.tx_id
    if not run.update(tx_id=batch.tx_id, **results):
        return None
    try:
        tx = _control_setpoint_batch_request(upload=upload, batch=batch)
    except (PermissionDenied, ValidationError) as exc:
        messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
        return _parse_finish(
            run,
            Status.REJECTED,
            tx_id=None,
            message="No setpoint was changed: " + " ".join(messages),
        )
    except Exception:
        logger.exception("control refused workbook upload %s unexpectedly", upload.pk)
        if tx := _existing_transaction(batch.tx_id):
            return _parse_finish(run, Status.APPLIED, transaction=tx)
        return _parse_finish(
            run,
            Status.FAILED,
            tx_id=None,
            message="The setpoints could not be requested because of an error on our side; "
            "nothing was changed. Try again later.",
        )
    return _parse_finish(run, Status.APPLIED, transaction=tx)


def _parse_finish(run: _Run, status: str, message: str = "", **fields) -> str | None:
    """End the parse run with `status`; an upload whose every row was
    checked has its error report queued with the result."""
    reported = status in WorkbookUpload.REPORTED
    if reported:
        fields.update(_report_queued_fields(timezone.now()))
    if message:
        fields["message"] = message
    if not run.save(status=status, finished_at=timezone.now(), **fields):
        return None
    if reported:
        transaction.on_commit(lambda: upload_report_enqueue(upload_id=run.upload_id))
    return status


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
    # No run holds it (report_run None) until a worker claims it.
    return {
        "report_status": ReportStatus.PREPARING,
        "report_run": None,
        "report_rows_done": 0,
        "report_message": "",
        "report_attempts": 0,
        "report_updated_at": now,
    }


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
    """Queue again the reports no worker took for a while (broker down when
    queued), and restart those whose run's heartbeat stopped (a worker
    killed mid-write); the ids queued. As for parses (see
    `uploads_requeue_stuck`)."""
    now = now or timezone.now()
    preparing = WorkbookUpload.objects.filter(report_status=ReportStatus.PREPARING)
    waiting = preparing.filter(report_run=None, report_updated_at__lt=now - stuck_after())
    requeued = _requeue(waiting, touch="report_updated_at", enqueue=upload_report_enqueue, now=now)
    lost = preparing.filter(
        report_run__isnull=False, report_updated_at__lt=now - heartbeat_stale_after()
    )
    for upload_id, run_id, attempts, path in lost.order_by("pk").values_list(
        "pk", "report_run", "report_attempts", "report_path"
    )[:200]:
        run = lost.filter(pk=upload_id, report_run=run_id)  # still silent, still that run
        if _report_restart(run, upload_id=upload_id, attempts=attempts, path=path, now=now):
            requeued.append(upload_id)
    return requeued


def _report_restart(lost, *, upload_id: int, attempts: int, path: str, now) -> bool:
    """Queue a lost report run again (no run holds it meanwhile, which the
    page shows), or fail it once it has had all its attempts."""
    if attempts >= max_attempts():
        message = (
            f"The report could not be prepared: the worker writing it was lost {attempts} "
            "times. Try again later; if it keeps failing, contact support."
        )
        failed = lost.update(
            report_status=ReportStatus.FAILED,
            report_message=message,
            report_path="",
            report_run=None,
            report_updated_at=now,
        )
        if failed:
            if path:
                (uploads_dir() / path).unlink(missing_ok=True)  # what the lost run left
            logger.error("report of upload %s: worker lost %s times; failed", upload_id, attempts)
            live.upload_changed(upload_id)
        return False
    # Its writes are fenced by report_run: the lost run can no longer write.
    if not lost.update(report_run=None, report_updated_at=now):
        return False
    logger.warning("report of upload %s: worker lost mid-write; restarting", upload_id)
    live.upload_changed(upload_id)
    return upload_report_enqueue(upload_id=upload_id)


def upload_report_build(*, upload_id: int) -> str | None:
    """Write the report of one checked upload: its stored file checked
    again with the same rules, row by row, so the report lists every
    message however many were stored with the upload.

    Each run writes a new file under a generated name and records it at
    once, so the next run deletes what a killed one left behind; the file
    is served only once the run has closed it and marked it ready.
    """
    claimed = _report_claim(upload_id)
    if claimed is None:
        return None  # ready already (a duplicate delivery), not asked for, or deleted
    upload, run, target = claimed
    live.upload_changed(upload_id)
    if upload.report_attempts > max_attempts():
        return _report_fail(
            run,
            f"The report could not be prepared after {max_attempts()} attempts. "
            "Try again later; if it keeps failing, contact support.",
        )
    try:
        rows = _report_write(upload, run, target)
    except Exception as exc:
        target.unlink(missing_ok=True)
        return _report_fail(run, _report_problem(exc, upload_id=upload_id))
    if run.save(report_status=ReportStatus.READY, report_rows_done=rows):
        return ReportStatus.READY
    target.unlink(missing_ok=True)  # a newer run took over
    return None


def _report_problem(exc: Exception, *, upload_id: int) -> str:
    """What the upload's page says about a report that failed."""
    if isinstance(exc, precheck.WorkbookRejected | FileNotFoundError):
        return (
            "The report cannot be prepared: the uploaded file is no longer stored or "
            "can no longer be read. Upload the workbook again for a new report."
        )
    if isinstance(exc, SoftTimeLimitExceeded):
        return "The report took too long to prepare; try again later."
    logger.error("the report of workbook upload %s failed", upload_id, exc_info=exc)
    return (
        "The report could not be prepared because of an error on our side. "
        "It has been logged; try again later."
    )


def _report_claim(upload_id: int) -> tuple[WorkbookUpload, _Run, Path] | None:
    """Take the report for a new run, with the new file it is to write; the
    file of the run before (finished or killed) is deleted. None when the
    report is not preparing."""
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
        return None
    if previous:
        (uploads_dir() / previous).unlink(missing_ok=True)
    upload = WorkbookUpload.objects.select_related("uploader").get(pk=upload_id)
    return upload, _Run.report(upload_id, run_id), uploads_dir() / relative


def _report_write(upload: WorkbookUpload, run: _Run, target: Path) -> int:
    from . import writers

    target.parent.mkdir(parents=True, exist_ok=True)
    # Created private (0600, like the upload) before a byte is written.
    target.touch(mode=0o600, exist_ok=False)
    index = parsing.MachineIndex.for_user(upload.uploader)
    run.beat()
    with open(target, "wb") as out:
        return writers.error_report_write(
            path=upload_path(upload),
            index=index,
            target=out,
            on_progress=lambda rows_done: run.progress(report_rows_done=rows_done),
            on_row=run.beat,
        )


def _report_fail(run: _Run, message: str) -> str | None:
    if run.save(report_status=ReportStatus.FAILED, report_message=message, report_path=""):
        return ReportStatus.FAILED
    return None
