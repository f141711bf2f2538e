"""An operator's setpoints become pending locks, in five steps:

validate → refuse-and-audit → supersede → insert → dispatch.

All or nothing: an unknown machine, a line the actor does not operate, an
invalid value or a machine in a critical status refuses the whole request,
and a refusal is audited. A field another operator has locked is taken
over: their lock is superseded and they are told. Commands reach gateways
only after the transaction that created them has committed.
"""

import uuid
from typing import NamedTuple, NoReturn

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record_many, audit_text
from apps.live import push
from apps.plant import validators
from apps.plant.models import Machine
from apps.plant.selectors import critical_status_codes, operated_line_ids
from fleetops.db import rows_insert

from ..merge import LOCK_TTL
from ..models import ControlTransaction, PendingLock
from . import dispatch
from .locks import field_reported
from .notices import notify_superseded
from .transactions import tx_status_refresh

Changes = dict[str, dict[str, object]]
State = PendingLock.State
Outcome = AuditEvent.Outcome
_LOCK_COLUMNS = (
    "tx_id",
    "machine_id",
    "field",
    "value",
    "previous_value",
    "state",
    "superseded_other",
    "created_at",
    "reason",
)


class _Taken(NamedTuple):
    """An active lock taken over by this request, as a plain row."""

    pk: int
    machine_id: int
    field: str
    value: str
    tx_id: uuid.UUID
    owner_id: int | None


class _NewLock(NamedTuple):
    machine: Machine
    field: str
    value: str
    previous: str  # what the machine reported when the lock was taken


# Validate
# --------


def setpoint_value_clean(field: str, value) -> object:
    """The typed value, or ValidationError saying what is wrong with it.
    The rules are the plant's, shared with the setpoint form and the workbook."""
    if field == PendingLock.Field.TARGET_SPEED:
        return validators.target_speed_clean(value)
    if field == PendingLock.Field.MODE:
        return validators.mode_clean(value)
    raise ValidationError(f"{field!r} cannot be set; setpoints are target_speed and mode.")


def _changes_clean(changes: Changes) -> Changes:
    """Every machine's typed setpoints, or one ValidationError keyed by machine code."""
    cleaned, errors = {}, {}
    for code, fields in changes.items():
        if not isinstance(fields, dict) or not fields:
            errors[code] = ["No setpoint given for this machine."]
            continue
        try:
            cleaned[code] = {f: setpoint_value_clean(f, v) for f, v in fields.items()}
        except ValidationError as exc:
            errors[code] = exc.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def _machines_known(codes: list[str]) -> list[Machine]:
    """The machines named, with only what the checks before locking need
    (the rows are read again under lock); ValidationError for unknown codes."""
    machines = {
        m.code: m
        for m in Machine.objects.select_related("line")
        .only("code", "status", "maintenance_locked_at", "line__code")
        .filter(code__in_array=codes)
    }
    unknown = sorted(set(codes) - set(machines))
    if unknown:
        raise ValidationError({code: ["No such machine."] for code in unknown})
    return list(machines.values())


# Refuse and audit
# ----------------


def _refuse(*, actor, host: str, machines, fields: Changes, reason, error: Exception) -> NoReturn:
    """Audit a denied request on each machine, one event per field asked
    for, then raise `error`: every refusal is on record. `reason(machine)`
    says why for that machine."""
    audit_record_many(
        [
            {
                "action": "setpoint_request",
                "actor": actor,
                "host": host,
                "machine": m,
                "field": name,
                "new_value": value,
                "outcome": Outcome.DENIED,
                "reason": reason(m),
            }
            for m in machines
            # A request naming no field is still a refused request.
            for name, value in (fields[m.code] or {"": ""}).items()
        ]
    )
    raise error


def _refuse_unless_operated(*, actor, host: str, machines: list[Machine], changes) -> None:
    # Checked before the values: a refused operator learns nothing about
    # them, and the refusal is audited whatever they sent.
    operated = operated_line_ids(user=actor)
    denied = [m for m in machines if m.line_id not in operated]
    if denied:
        lines = ", ".join(sorted({m.line.code for m in denied}))
        _refuse(
            actor=actor,
            host=host,
            machines=denied,
            fields={code: f if isinstance(f, dict) else {} for code, f in changes.items()},
            reason=lambda m: f"{actor} does not operate line {m.line.code}",
            error=PermissionDenied(f"You do not operate line {lines}."),
        )


def _refuse_in_safety_state(*, actor, host: str, machines, cleaned: Changes, critical) -> None:
    in_safety_state = [m for m in machines if m.display_status in critical]
    if in_safety_state:
        _refuse(
            actor=actor,
            host=host,
            machines=in_safety_state,
            fields=cleaned,
            reason=lambda m: f"machine in {m.display_status}",
            error=_refused_in_safety_state(in_safety_state),
        )


def _refused_in_safety_state(machines) -> ValidationError:
    names = ", ".join(f"{m.code} is in {m.display_status}" for m in machines)
    return ValidationError(f"{names}: setpoints are refused until it leaves that state.")


# Request
# -------


def setpoint_request(
    *,
    actor,
    machine: Machine,
    changes: dict[str, object],
    source: str = ControlTransaction.Source.FORM,
    host: str = "",
) -> ControlTransaction:
    """One machine's setpoints (the console form's), as a batch of one."""
    return setpoint_batch_request(
        actor=actor, changes={machine.code: changes}, source=source, host=host
    )


def setpoint_batch_request(
    *,
    actor,
    changes: Changes,
    source: str = ControlTransaction.Source.WORKBOOK,
    tx_id: uuid.UUID | None = None,
    host: str = "",
) -> ControlTransaction:
    """Lock each (machine, field) for the actor in one control transaction
    (see the module's docstring for what refuses it)."""
    if not changes:
        raise ValidationError("No setpoint given.")
    machines = _machines_known(list(changes))
    _refuse_unless_operated(actor=actor, host=host, machines=machines, changes=changes)
    cleaned = _changes_clean(changes)
    critical = critical_status_codes()
    _refuse_in_safety_state(
        actor=actor, host=host, machines=machines, cleaned=cleaned, critical=critical
    )
    now = timezone.now()
    with transaction.atomic():
        locked = _machines_lock(machines)
        # Checked again under the row locks: the status may just have changed.
        if not any(m.display_status in critical for m in locked):
            return _transaction_open(
                tx_id=tx_id,
                source=source,
                actor=actor,
                host=host,
                locked=locked,
                cleaned=cleaned,
                now=now,
            )
    # It did (the machine E-stopped a moment ago): refused and audited, in
    # its own transaction, like the first check.
    _refuse_in_safety_state(
        actor=actor, host=host, machines=locked, cleaned=cleaned, critical=critical
    )
    raise AssertionError("unreachable: _refuse_in_safety_state raises")


def _transaction_open(*, tx_id, source, actor, host, locked, cleaned, now) -> ControlTransaction:
    """The control transaction and its locks, superseding older ones, all
    audited; the commands go out once it commits."""
    tx = ControlTransaction.objects.create(
        tx_id=tx_id or uuid.uuid4(), source=source, actor=actor, expires_at=now + LOCK_TTL
    )
    taken = _supersede(tx=tx, actor=actor, machines=locked, cleaned=cleaned, now=now)
    from_others = [t for t in taken if t.owner_id != getattr(actor, "pk", None)]
    conflicts = {(t.machine_id, t.field) for t in from_others}
    new_locks = _locks_insert(tx=tx, machines=locked, cleaned=cleaned, conflicts=conflicts, now=now)
    by_id = {m.pk: m for m in locked}
    audit_record_many(
        [_superseded_event(t, by_id[t.machine_id], tx=tx, actor=actor, host=host) for t in taken]
        + [_requested_event(lock, tx=tx, actor=actor, host=host) for lock in new_locks]
    )
    tx_status_refresh({t.tx_id for t in taken})
    _dispatch_on_commit(tx=tx, machines=locked, from_others=from_others, actor=actor)
    return tx


def _machines_lock(machines: list[Machine]) -> list[Machine]:
    # In primary-key order: two requests over the same machines wait for
    # each other instead of deadlocking.
    return list(
        Machine.objects.select_for_update(no_key=True, of=("self",))
        .select_related("line")
        .filter(pk__in_array=[m.pk for m in machines])
        .order_by("pk")
    )


# Supersede
# ---------


def _superseded_reason(actor, tx: ControlTransaction) -> str:
    return f"superseded by {actor} (tx {tx.tx_id})"


def _supersede(*, tx, actor, machines: list[Machine], cleaned: Changes, now) -> list[_Taken]:
    """End the active locks on the fields this request locks, in one
    UPDATE: a workbook that follows another one takes over thousands."""
    wanted = {(m.pk, f) for m in machines for f in cleaned[m.code]}
    rows = (
        PendingLock.objects.select_for_update(of=("self",))
        .filter(machine_id__in_array=[m.pk for m in machines], state__in=PendingLock.ACTIVE)
        .order_by("pk")
        .values_list("pk", "machine_id", "field", "value", "tx_id", "tx__actor_id")
    )
    taken = [t for t in map(_Taken._make, rows) if (t.machine_id, t.field) in wanted]
    PendingLock.objects.filter(pk__in_array=[t.pk for t in taken]).update(
        state=State.SUPERSEDED, resolved_at=now, reason=_superseded_reason(actor, tx)
    )
    return taken


def _superseded_event(taken: _Taken, machine: Machine, *, tx, actor, host: str) -> dict:
    return {
        "action": "lock_superseded",
        "actor": actor,
        "host": host,
        "machine": machine,
        "field": taken.field,
        "old_value": taken.value,
        "tx_id": taken.tx_id,
        "outcome": Outcome.FAILED,
        "reason": _superseded_reason(actor, tx),
    }


# Insert
# ------


def _locks_insert(
    *, tx, machines: list[Machine], cleaned: Changes, conflicts, now
) -> list[_NewLock]:
    """One inflight lock per (machine, field); `conflicts` are the pairs
    taken from another operator, shown styled as a conflict."""
    new_locks = []
    for m in machines:
        for field, value in cleaned[m.code].items():
            reported = field_reported(m, field)
            # Written the audit's way: a reported 1000.0 rpm is "1000".
            new_locks.append(_NewLock(m, field, audit_text(value), audit_text(reported)))
    # A workbook locks thousands of fields: plain rows, not ORM saves.
    rows_insert(
        PendingLock,
        _LOCK_COLUMNS,
        (
            (tx.tx_id, lock.machine.pk, lock.field, lock.value, lock.previous, State.INFLIGHT)
            + ((lock.machine.pk, lock.field) in conflicts, now, "")
            for lock in new_locks
        ),
    )
    return new_locks


def _requested_event(lock: _NewLock, *, tx: ControlTransaction, actor, host: str) -> dict:
    return {
        "action": "setpoint_request",
        "actor": actor,
        "host": host,
        "machine": lock.machine,
        "field": lock.field,
        "old_value": lock.previous,
        "new_value": lock.value,
        "tx_id": tx.tx_id,
        "outcome": Outcome.OK,
        "reason": f"source: {tx.source}",
    }


# Dispatch
# --------


def _dispatch_on_commit(*, tx, machines: list[Machine], from_others: list[_Taken], actor) -> None:
    """After commit: the commands to the gateways, the machines to the live
    layer, and a toast to each operator whose lock was taken over."""
    codes = {m.pk: m.code for m in machines}
    notices = [(t.owner_id, codes[t.machine_id], t.field) for t in from_others if t.owner_id]
    machine_ids = [m.pk for m in machines]
    transaction.on_commit(lambda: dispatch.commands_dispatch(tx_id=tx.tx_id))
    transaction.on_commit(lambda: push.machines_changed(machine_ids))
    transaction.on_commit(lambda: notify_superseded(notices, actor))
