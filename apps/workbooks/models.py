"""Workbook uploads: one row per uploaded setpoint workbook, which is also
the work queue of the parsing task."""

from django.conf import settings
from django.db import models

# Errors and warnings kept on the row (the error report recomputes them all).
STORED_MESSAGES_LIMIT = 1000


class WorkbookUpload(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PARSING = "parsing"
        # Parsed and validated; nothing applied (validate only, or no valid row).
        PARSED = "parsed"
        # Valid rows handed to control as one transaction of pending locks.
        APPLIED = "applied"
        # The file itself was refused (format, template, size, permission).
        REJECTED = "rejected"
        # Something broke on our side; the message says so, never a traceback.
        FAILED = "failed"

    ACTIVE = (Status.QUEUED, Status.PARSING)
    # The uploads whose rows were all checked: they have an error report.
    REPORTED = (Status.PARSED, Status.APPLIED)

    class ReportStatus(models.TextChoices):
        # Not parsed (yet), or parsed before reports were kept.
        NONE = "", "none"
        # Queued or being written; report_rows_done says how far.
        PREPARING = "preparing"
        READY = "ready"
        # report_message says why, for the operator; nothing else is lost.
        FAILED = "failed"

    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="workbook_uploads"
    )
    original_filename = models.CharField(max_length=255)
    # Relative to VAR_DIR/uploads: outside the web root, never served as media.
    stored_path = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    validate_only = models.BooleanField(default=False)
    # The uploader's address, for the audit trail of the control transaction.
    host = models.CharField(max_length=255, blank=True)
    rows_total = models.PositiveIntegerField(null=True, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    summary = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # machine code -> {"target_speed": int, "mode": str?} of the valid rows.
    changes = models.JSONField(default=dict, blank=True)
    tx_id = models.UUIDField(null=True, blank=True)
    transaction = models.OneToOneField(
        "control.ControlTransaction",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="workbook_upload",
    )
    # Parse runs so far: the fencing token of the current one, and the
    # give-up counter (WORKBOOK_MAX_ATTEMPTS).
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # While parsing: the run's heartbeat, read by the lost-run sweeper.
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # The error report, written by its own task once the rows are checked.
    report_status = models.CharField(
        max_length=16, choices=ReportStatus.choices, blank=True, default=ReportStatus.NONE
    )
    # Relative to VAR_DIR/uploads like stored_path; served only when ready.
    report_path = models.CharField(max_length=255, blank=True)
    report_rows_done = models.PositiveIntegerField(default=0)
    report_message = models.TextField(blank=True)
    # Runs since the report was last asked for (the give-up counter).
    report_attempts = models.PositiveSmallIntegerField(default=0)
    # The fencing token of the run writing the report: each run's writes
    # are conditional on it, so a run given up on cannot overwrite a newer
    # one. None while preparing: queued, no run holds it yet.
    report_run = models.UUIDField(null=True, blank=True)
    # The report run's heartbeat (or when it was queued), for the sweeper.
    report_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "updated_at"]),
            models.Index(fields=["report_status", "report_updated_at"]),
        ]

    def __str__(self):
        return f"upload {self.pk} {self.original_filename} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def restarting(self) -> bool:
        """Queued again after its worker was lost mid-parse: only the
        sweeper puts an upload that was parsing back in the queue."""
        return self.status == self.Status.QUEUED and self.attempts > 0

    @property
    def percent(self) -> int:
        if not self.rows_total:
            return 100 if not self.is_active else 0
        return min(100, round(100 * self.rows_done / self.rows_total))

    @property
    def has_report(self) -> bool:
        """Every row was checked, so a report of them can be written."""
        return self.status in self.REPORTED

    @property
    def report_restarting(self) -> bool:
        """Queued again after the worker writing it was lost (a run had
        claimed it, and the sweeper took it back)."""
        return (
            self.report_status == self.ReportStatus.PREPARING
            and self.report_run is None
            and self.report_attempts > 0
        )

    @property
    def report_percent(self) -> int:
        if not self.rows_total:
            return 0
        return min(100, round(100 * self.report_rows_done / self.rows_total))

    @property
    def topic(self) -> str:
        return f"upload:{self.pk}"
