"""How active locks end without an operator: reconciled when the machine
reports the wanted value, failed when it enters a critical status (the
safety override), expired when nothing settled them within 10 s.

Each lock is claimed by a conditional UPDATE, so telemetry's reconcile, the
beat job and any other process may run these at once without a lock
ending twice.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record_many
from apps.live import push
from apps.plant.selectors import critical_status_codes

from ..merge import LOCK_TTL
from ..models import PendingLock
from .notices import notify_resolved
from .transactions import tx_status_refresh

State = PendingLock.State
SAFETY_OVERRIDE = "safety override"


def field_reported(machine, field: str):
    """What the machine last reported for a setpoint field (the truth tier)."""
    return getattr(machine, field)


def _same(field: str, reported, wanted) -> bool:
    if reported is None:
        return False
    if field == PendingLock.Field.TARGET_SPEED:
        return abs(float(reported) - float(wanted)) < 1e-6
    return reported == wanted


def _active_locks(**filters) -> list[PendingLock]:
    return list(
        PendingLock.objects.filter(state__in=PendingLock.ACTIVE, **filters)
        .select_related("machine__line", "tx")
        .order_by("pk")
    )


def locks_reconcile(*, machine_ids, now: datetime | None = None) -> dict[str, int]:
    """Resolve active locks of these machines against what they report:
    a critical status fails them ("safety override"); a reported value
    equal to the lock's reconciles it."""
    now = now or timezone.now()
    candidates = _active_locks(machine_id__in_array=list(machine_ids))
    if not candidates:
        return _resolve([], now=now)
    critical = critical_status_codes()
    moves = []
    for lock in candidates:
        if lock.machine.display_status in critical:
            moves.append((lock, State.FAILED, SAFETY_OVERRIDE))
        elif _same(lock.field, field_reported(lock.machine, lock.field), lock.typed_value()):
            moves.append((lock, State.RECONCILED, "reported by the machine"))
    return _resolve(moves, now=now)


def locks_housekeeping(*, now: datetime | None = None) -> dict[str, int]:
    """Expire locks older than 10 s and fail locks on machines in a
    critical status. Safe to run from several processes at once: each lock
    is claimed by a conditional UPDATE."""
    now = now or timezone.now()
    critical = critical_status_codes()
    moves = []
    for lock in _active_locks():
        if lock.machine.display_status in critical:
            moves.append((lock, State.FAILED, SAFETY_OVERRIDE))
        elif now - lock.created_at > LOCK_TTL:
            moves.append((lock, State.EXPIRED, "not confirmed by the machine within 10 s"))
    return _resolve(moves, now=now)


def _resolve(moves, *, now) -> dict[str, int]:
    """Apply (lock, state, reason) moves; returns how many locks each state took."""
    counts = {str(state): 0 for state in (State.RECONCILED, State.FAILED, State.EXPIRED)}
    if not moves:
        return counts
    with transaction.atomic():
        done = _claim(moves, now=now)
        for lock in done:
            counts[str(lock.state)] += 1
        audit_record_many([_resolved_event(lock) for lock in done])
        tx_status_refresh({lock.tx_id for lock in done})
        _announce_resolved(done)
    return counts


def _claim(moves, *, now) -> list[PendingLock]:
    """The locks this process moved: one another process resolved first is left alone."""
    done = []
    for lock, state, reason in moves:
        claimed = PendingLock.objects.filter(pk=lock.pk, state__in=PendingLock.ACTIVE).update(
            state=state, resolved_at=now, reason=reason
        )
        if claimed:
            lock.state, lock.reason = state, reason
            done.append(lock)
    return done


def _resolved_event(lock: PendingLock) -> dict:
    return {
        "action": f"lock_{lock.state}",
        "actor": None,
        "machine": lock.machine,
        "field": lock.field,
        "new_value": lock.value,
        "tx_id": lock.tx_id,
        "outcome": (
            AuditEvent.Outcome.OK if lock.state == State.RECONCILED else AuditEvent.Outcome.FAILED
        ),
        "reason": lock.reason,
    }


def _announce_resolved(done: list[PendingLock]) -> None:
    """After commit: the machines to the live layer, a toast to each actor whose change failed."""
    machine_ids = sorted({lock.machine_id for lock in done})
    toasts = [
        (lock.tx.actor_id, lock.machine.code, lock.field, lock.state, lock.reason)
        for lock in done
        if lock.state != State.RECONCILED
    ]
    if machine_ids:
        transaction.on_commit(lambda: push.machines_changed(machine_ids))
    if toasts:
        transaction.on_commit(lambda: notify_resolved(toasts))
