from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from apps.plant.models import Machine

from .merge import FLASH, FieldView, Lock, merge
from .models import ControlTransaction, PendingLock


def locks_for_machines(*, machine_ids, now: datetime | None = None) -> dict[int, list[Lock]]:
    """The locks the view needs: active ones, and those that failed or
    expired within the flash window. One query whatever the count."""
    now = now or timezone.now()
    rows = PendingLock.objects.filter(machine_id__in_array=list(machine_ids)).filter(
        Q(state__in=PendingLock.ACTIVE) | Q(resolved_at__gte=now - FLASH)
    )
    found: dict[int, list[Lock]] = {}
    for row in rows.only(
        "machine_id",
        "field",
        "value",
        "state",
        "created_at",
        "resolved_at",
        "tx_id",
        "superseded_other",
    ):
        found.setdefault(row.machine_id, []).append(
            Lock(
                field=row.field,
                value=row.typed_value(),
                state=row.state,
                created_at=row.created_at,
                resolved_at=row.resolved_at,
                tx_id=row.tx_id,
                superseded_other=row.superseded_other,
            )
        )
    return found


def machine_view_fields(
    *, machine: Machine, locks: list[Lock], now: datetime, critical: frozenset[str]
) -> dict[str, FieldView]:
    truth = {
        "status": machine.display_status,
        "target_speed": machine.target_speed,
        "mode": machine.mode or None,
    }
    return merge(truth, locks, now, critical)


def control_transaction_detail(*, tx_id) -> ControlTransaction | None:
    return (
        ControlTransaction.objects.select_related("actor")
        .prefetch_related("locks__machine")
        .filter(pk=tx_id)
        .first()
    )
