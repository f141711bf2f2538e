from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from .models import AuditEvent

PAGE_SIZE = 50
# Who may read the audit trail (the lists, the export, a transaction's lifecycle).
AUDIT_READ_PERMISSION = "audit.view_audit_list"


@dataclass(frozen=True)
class AuditFilters:
    line: str = ""
    machine: str = ""
    actor: str = ""
    tx: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None


def audit_event_list(*, filters: AuditFilters) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.all()
    if filters.line:
        events = events.filter(line_code=filters.line)
    if filters.machine:
        events = events.filter(machine_code=filters.machine)
    if filters.actor:
        events = events.filter(actor_label=filters.actor)
    if filters.tx:
        events = events.filter(tx_id=filters.tx)
    if filters.outcome:
        events = events.filter(outcome=filters.outcome)
    if filters.since:
        events = events.filter(at__gte=filters.since)
    if filters.until:
        events = events.filter(at__lt=filters.until)
    return events.order_by("-id")


def audit_event_page(
    *, filters: AuditFilters, before: int | None = None, size: int = PAGE_SIZE
) -> tuple[list[AuditEvent], int | None]:
    """One page, newest first, and the id to continue from (None at the end).

    Keyset pagination on the primary key: the cost of a page does not grow
    with how deep it is, unlike OFFSET over millions of rows, and no COUNT
    of the whole table is ever taken.
    """
    events = audit_event_list(filters=filters)
    if before is not None:
        events = events.filter(id__lt=before)
    rows = list(events[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1].id if more else None)


def audit_events_for_tx(*, tx_id) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(tx_id=tx_id).order_by("id")
