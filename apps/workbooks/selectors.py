"""Reads of workbook uploads, always through who is asking."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from apps.plant import selectors as plant
from apps.plant.models import Machine

from .models import WorkbookUpload

# Messages shown on the page; the error report holds every one of them.
SHOWN_MESSAGES = 200


def upload_can_create(*, user) -> bool:
    """Uploading is for operators: anyone who operates at least one line."""
    return bool(plant.operated_line_ids(user=user))


def upload_list_for_user(*, user) -> QuerySet[WorkbookUpload]:
    if not getattr(user, "is_authenticated", False):
        return WorkbookUpload.objects.none()
    uploads = WorkbookUpload.objects.select_related("uploader")
    return uploads if user.is_superuser else uploads.filter(uploader=user)


def upload_get_for_user(*, user, upload_id) -> WorkbookUpload | None:
    try:
        return upload_list_for_user(user=user).filter(pk=int(upload_id)).first()
    except (TypeError, ValueError):
        return None


def upload_report_ready(*, upload_id) -> bool:
    return WorkbookUpload.objects.filter(
        pk=upload_id, report_status=WorkbookUpload.ReportStatus.READY
    ).exists()


def template_machines_for_user(*, user) -> QuerySet[Machine]:
    """The machines a template is pre-filled with: those of lines the user operates."""
    return (
        Machine.objects.filter(line_id__in=plant.operated_line_ids(user=user))
        .select_related("line")
        .order_by("line__display_order", "line__code", "code")
    )


@dataclass
class RowStatus:
    machine: str
    row: int | None
    change: dict
    locks: list  # [(field, value, state)]

    # A row's summary when it has no lock, or locks in different states.
    NOT_REQUESTED = "not requested"
    MIXED = "mixed"

    @property
    def state(self) -> str:
        states = {state for _, _, state in self.locks}
        if not states:
            return self.NOT_REQUESTED
        return states.pop() if len(states) == 1 else self.MIXED

    @property
    def active(self) -> bool:
        """A lock of the row still waits for the machine."""
        from apps.control.models import PendingLock

        return any(state in PendingLock.ACTIVE for _, _, state in self.locks)


def upload_row_statuses(*, upload: WorkbookUpload) -> list[RowStatus]:
    """Each valid row's control lifecycle: the state of its pending locks."""
    rows = {
        code: RowStatus(machine=code, row=None, change=change, locks=[])
        for code, change in (upload.changes or {}).items()
    }
    if upload.transaction_id:
        from apps.control.models import PendingLock

        for code, field, value, state in (
            PendingLock.objects.filter(tx_id=upload.transaction_id)
            .order_by("machine__code", "field")
            .values_list("machine__code", "field", "value", "state")
        ):
            if code in rows:
                rows[code].locks.append((field, value, state))
    return sorted(rows.values(), key=lambda r: (len(r.machine), r.machine))


def upload_restarting(*, upload: WorkbookUpload, now=None) -> tuple[bool, bool]:
    """Whether the parse, and the report, start again because their worker
    was lost: queued again by the sweeper, or a run silent past the
    heartbeat limit, which the next sweep queues again. The second case
    keeps the page truthful while no worker is up to run that sweep."""
    now = now or timezone.now()
    silent_since = now - timedelta(seconds=settings.WORKBOOK_HEARTBEAT_STALE_SECONDS)
    max_attempts = settings.WORKBOOK_MAX_ATTEMPTS
    parse = upload.restarting or (
        upload.status == WorkbookUpload.Status.PARSING
        and upload.updated_at < silent_since
        and upload.attempts < max_attempts
    )
    report = upload.report_restarting or (
        upload.report_status == WorkbookUpload.ReportStatus.PREPARING
        and upload.report_run is not None
        and upload.report_updated_at is not None
        and upload.report_updated_at < silent_since
        and upload.report_attempts < max_attempts
    )
    return parse, report


def upload_page(*, upload: WorkbookUpload) -> dict:
    """One context for the page, its htmx partial and its live push."""
    rows = upload_row_statuses(upload=upload)
    parse_restarting, report_restarting = upload_restarting(upload=upload)
    return {
        # The page polls (a fallback to the live socket) while something moves.
        "polling": upload.is_active
        or upload.report_status == WorkbookUpload.ReportStatus.PREPARING
        or any(r.active for r in rows),
        "upload": upload,
        "errors": (upload.errors or [])[:SHOWN_MESSAGES],
        "warnings": (upload.warnings or [])[:SHOWN_MESSAGES],
        "more_errors": max(0, len(upload.errors or []) - SHOWN_MESSAGES),
        "more_warnings": max(0, len(upload.warnings or []) - SHOWN_MESSAGES),
        "rows": rows,
        "parse_restarting": parse_restarting,
        "report_restarting": report_restarting,
        # For "attempt 2 of 3" once a run's worker was lost.
        "max_attempts": settings.WORKBOOK_MAX_ATTEMPTS,
    }
