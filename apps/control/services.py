"""Setpoint control: the lifecycle of control transactions and their
pending locks.

    request ──▶ inflight ──ack──▶ confirmed ──telemetry shows value──▶ reconciled
                   │  └──nack──▶ failed            │
                   ├──10 s without reconcile──▶ expired
                   ├──another operator locks the field──▶ superseded
                   └──machine enters a critical status──▶ failed ("safety override")

Every step is one small atomic block that claims the rows it changes,
writes its audit events, and after commit announces the machines to the
live layer (and toasts to the actor). Commands reach gateways only after
the transaction that created them has committed.
"""

import logging
import uuid
from collections import defaultdict
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record_many
from apps.live.push import machines_changed, toast_to_user
from apps.plant.models import Gateway, Machine
from apps.plant.selectors import critical_status_codes, operated_line_ids
from fleetops.db import rows_insert

from .merge import LOCK_TTL
from .models import (
    MODES,
    TARGET_SPEED_MAX,
    TARGET_SPEED_MIN,
    ControlTransaction,
    PendingLock,
    typed,
)

logger = logging.getLogger(__name__)

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


def gateway_group(gateway_id: int) -> str:
    return f"gateway.{gateway_id}"


# Validation
# ----------


def setpoint_value_clean(field: str, value) -> object:
    """The typed value, or ValidationError saying what is wrong with it."""
    if field == PendingLock.Field.TARGET_SPEED:
        if isinstance(value, bool) or value is None or value == "":
            raise ValidationError("Target speed must be a number from 0 to 3000.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"Target speed must be a number, not {value!r}.") from None
        if number != number or not TARGET_SPEED_MIN <= number <= TARGET_SPEED_MAX:
            raise ValidationError(f"Target speed must be from 0 to 3000, not {value}.")
        return int(number) if number.is_integer() else number
    if field == PendingLock.Field.MODE:
        if value not in MODES:
            raise ValidationError(f"Mode must be one of RUN, IDLE, MAINTENANCE, not {value!r}.")
        return value
    raise ValidationError(f"{field!r} cannot be set; setpoints are target_speed and mode.")


def _changes_clean(changes: Changes) -> Changes:
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


def _truth(machine: Machine, field: str):
    return getattr(machine, field)


def _same(field: str, reported, wanted) -> bool:
    if reported is None:
        return False
    if field == PendingLock.Field.TARGET_SPEED:
        return abs(float(reported) - float(wanted)) < 1e-6
    return reported == wanted


# Request
# -------


def setpoint_request(
    *, actor, machine: Machine, changes: dict[str, object], source: str = "form", host: str = ""
) -> ControlTransaction:
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
    """Lock each (machine, field) for the actor in one control transaction.

    All or nothing: an invalid value, an unknown machine, a line the actor
    does not operate or a machine in a critical status refuses the whole
    request (the refusal is audited). A field another operator has locked
    is taken over: their lock is superseded and they are told.
    """
    if not changes:
        raise ValidationError("No setpoint given.")
    # What the checks before locking need; the rows are read again under lock.
    machines = {
        m.code: m
        for m in Machine.objects.select_related("line")
        .only("code", "status", "maintenance_locked_at", "line__code")
        .filter(code__in_array=list(changes))
    }
    unknown = sorted(set(changes) - set(machines))
    if unknown:
        raise ValidationError({code: ["No such machine."] for code in unknown})
    # Permission first: a refused operator learns nothing about the values,
    # and the refusal is audited whatever they sent.
    cleaned = {code: fields if isinstance(fields, dict) else {} for code, fields in changes.items()}
    operated = operated_line_ids(user=actor)
    denied = [m for m in machines.values() if m.line_id not in operated]
    if denied:
        audit_record_many(
            [
                {
                    "action": "setpoint_request",
                    "actor": actor,
                    "host": host,
                    "machine": m,
                    "field": ",".join(cleaned[m.code]),
                    "outcome": Outcome.DENIED,
                    "new_value": _describe(cleaned[m.code]),
                    "reason": f"{actor} does not operate line {m.line.code}",
                }
                for m in denied
            ]
        )
        lines = ", ".join(sorted({m.line.code for m in denied}))
        raise PermissionDenied(f"You do not operate line {lines}.")
    cleaned = _changes_clean(changes)

    now = timezone.now()
    critical = critical_status_codes()
    in_safety_state = [m for m in machines.values() if m.display_status in critical]
    if in_safety_state:
        audit_record_many(
            [
                {
                    "action": "setpoint_request",
                    "actor": actor,
                    "host": host,
                    "machine": m,
                    "field": ",".join(cleaned[m.code]),
                    "new_value": _describe(cleaned[m.code]),
                    "outcome": Outcome.DENIED,
                    "reason": f"machine in {m.display_status}",
                }
                for m in in_safety_state
            ]
        )
        raise _refused_in_safety_state(in_safety_state)
    with transaction.atomic():
        locked = list(
            Machine.objects.select_for_update(no_key=True, of=("self",))
            .select_related("line")
            .filter(pk__in_array=[m.pk for m in machines.values()])
            .order_by("pk")
        )
        # Checked again under the row locks: the status may just have changed.
        in_safety_state = [m for m in locked if m.display_status in critical]
        if in_safety_state:
            raise _refused_in_safety_state(in_safety_state)

        tx = ControlTransaction.objects.create(
            tx_id=tx_id or uuid.uuid4(), source=source, actor=actor, expires_at=now + LOCK_TTL
        )
        # The active locks on these fields, as plain rows: a workbook that
        # follows another one takes over thousands of them.
        wanted = {(m.pk, f) for m in locked for f in cleaned[m.code]}
        superseded = [
            row
            for row in PendingLock.objects.select_for_update(of=("self",))
            .filter(machine_id__in_array=[m.pk for m in locked], state__in=PendingLock.ACTIVE)
            .order_by("pk")
            .values_list("pk", "machine_id", "field", "value", "tx_id", "tx__actor_id")
            if (row[1], row[2]) in wanted
        ]
        locked_by_id = {m.pk: m for m in locked}
        actor_id = getattr(actor, "pk", None)
        reason = f"superseded by {actor} (tx {tx.tx_id})"
        taken_from_others = {
            (machine_id, field)
            for _pk, machine_id, field, _value, _tx, owner_id in superseded
            if owner_id != actor_id
        }
        events = [
            {
                "action": "lock_superseded",
                "actor": actor,
                "host": host,
                "machine": locked_by_id[machine_id],
                "field": field,
                "old_value": value,
                "tx_id": old_tx_id,
                "outcome": Outcome.FAILED,
                "reason": reason,
            }
            for _pk, machine_id, field, value, old_tx_id, _owner in superseded
        ]
        # One UPDATE, however many locks are taken over.
        PendingLock.objects.filter(pk__in_array=[row[0] for row in superseded]).update(
            state=State.SUPERSEDED, resolved_at=now, reason=reason
        )

        # (machine, field, value, what the machine reported) per new lock.
        new_locks = [
            (m, field, str(value), "" if _truth(m, field) is None else str(_truth(m, field)))
            for m in locked
            for field, value in cleaned[m.code].items()
        ]
        # A workbook locks thousands of fields: plain rows, not ORM saves.
        rows_insert(
            PendingLock,
            _LOCK_COLUMNS,
            (
                (tx.tx_id, m.pk, field, value, previous, State.INFLIGHT)
                + ((m.pk, field) in taken_from_others, now, "")
                for m, field, value, previous in new_locks
            ),
        )
        events += [
            {
                "action": "setpoint_request",
                "actor": actor,
                "host": host,
                "machine": m,
                "field": field,
                "old_value": previous,
                "new_value": value,
                "tx_id": tx.tx_id,
                "outcome": Outcome.OK,
                "reason": f"source: {source}",
            }
            for m, field, value, previous in new_locks
        ]
        audit_record_many(events)
        _tx_status_refresh({row[4] for row in superseded})

        notices = [
            (owner_id, locked_by_id[machine_id].code, field)
            for _pk, machine_id, field, _value, _tx, owner_id in superseded
            if (machine_id, field) in taken_from_others and owner_id
        ]
        machine_ids = [m.pk for m in locked]
        transaction.on_commit(lambda: commands_dispatch(tx_id=tx.tx_id))
        transaction.on_commit(lambda: machines_changed(machine_ids))
        transaction.on_commit(lambda: _notify_superseded(notices, actor))
    return tx


def _refused_in_safety_state(machines) -> ValidationError:
    names = ", ".join(f"{m.code} is in {m.display_status}" for m in machines)
    return ValidationError(f"{names}: setpoints are refused until it leaves that state.")


def _describe(fields: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def _notify_superseded(notices, actor) -> None:
    for user_id, code, field in notices:
        _toast(
            user_id,
            "conflict",
            f"Updated by another operator: {actor} changed {field.replace('_', ' ')} of {code}.",
        )


def _toast(user_id: int | None, level: str, text: str) -> None:
    if user_id:
        html = render_to_string("control/_toast.html", {"level": level, "text": text})
        toast_to_user(user_id=user_id, html=html)


# Commands to gateways
# --------------------


# What a command needs of each lock, read as plain rows (a workbook's
# transaction has thousands of locks; no model instances needed).
_COMMAND_FIELDS = ("tx_id", "machine_id", "machine__code", "field", "value", "tx__expires_at")


def command_payloads(*, locks) -> list[tuple[int, dict]]:
    """(gateway id, command) for each machine of the given active locks
    (a queryset), one command per (transaction, machine)."""
    by_tx_machine: dict[tuple, dict] = defaultdict(dict)
    expiry: dict[uuid.UUID, datetime] = {}
    codes: dict[int, str] = {}
    for tx_id, machine_id, code, field, value, expires_at in locks.values_list(*_COMMAND_FIELDS):
        by_tx_machine[(tx_id, machine_id)][field] = typed(field, value)
        expiry[tx_id] = expires_at
        codes[machine_id] = code
    gateways = defaultdict(list)
    for gw_id, machine_id in Gateway.machines.through.objects.filter(
        machine_id__in_array=list(codes), gateway__revoked_at__isnull=True
    ).values_list("gateway_id", "machine_id"):
        gateways[machine_id].append(gw_id)
    out = []
    for (tx_id, machine_id), fields in by_tx_machine.items():
        command = {
            "type": "command",
            "tx_id": str(tx_id),
            "machine": codes[machine_id],
            "set": fields,
            "expires_at": expiry[tx_id].isoformat().replace("+00:00", "Z"),
        }
        out += [(gw_id, command) for gw_id in gateways[machine_id]]
    return out


def commands_dispatch(*, tx_id) -> int:
    """Send the transaction's commands to the gateways of its machines."""
    locks = PendingLock.objects.filter(tx_id=tx_id, state=State.INFLIGHT).order_by("pk")
    payloads = command_payloads(locks=locks)
    # One channel-layer message per gateway, however many machines a
    # workbook touched: a thousand commands are one send, not a thousand.
    by_gateway: dict[int, list[dict]] = defaultdict(list)
    for gateway_id, command in payloads:
        by_gateway[gateway_id].append(command)

    async def send_all():
        layer = get_channel_layer()
        for gateway_id, commands in by_gateway.items():
            try:
                await layer.group_send(
                    gateway_group(gateway_id), {"type": "gateway.commands", "commands": commands}
                )
            except Exception:
                # The locks stay inflight: a reconnecting gateway gets them
                # again, and without an answer they expire after 10 s.
                logger.warning("could not send commands to gateway %s", gateway_id, exc_info=True)

    async_to_sync(send_all)()
    return len(payloads)


def commands_pending_for_gateway(*, gateway: Gateway, now: datetime | None = None) -> list[dict]:
    """Unexpired inflight commands for a gateway that (re)connects."""
    now = now or timezone.now()
    locks = PendingLock.objects.filter(
        state=State.INFLIGHT,
        machine__in=gateway.machines.all(),
        tx__expires_at__gt=now,
    ).order_by("pk")
    return [cmd for gw_id, cmd in command_payloads(locks=locks) if gw_id == gateway.pk]


def command_answer(
    *, gateway: Gateway, tx_id, machine_code: str, ok: bool, reason: str = ""
) -> int:
    """A gateway's ack (ok) or nack for one machine of a transaction.

    Returns how many locks moved. An answer from a gateway not bound to the
    machine, or for locks no longer inflight, changes nothing.
    """
    now = timezone.now()
    machine = gateway.machines.filter(code=machine_code).select_related("line").first()
    if machine is None:
        return 0
    with transaction.atomic():
        locks = list(
            PendingLock.objects.select_for_update(of=("self",))
            .select_related("tx")
            .filter(tx_id=tx_id, machine=machine, state=State.INFLIGHT)
        )
        if not locks:
            return 0
        for lock in locks:
            if ok:
                lock.state, lock.confirmed_at = State.CONFIRMED, now
            else:
                lock.state, lock.resolved_at = State.FAILED, now
                lock.reason = f"rejected by gateway: {reason}"[:200] if reason else "rejected"
        PendingLock.objects.bulk_update(locks, ["state", "confirmed_at", "resolved_at", "reason"])
        audit_record_many(
            [
                {
                    "action": "command_ack" if ok else "command_nack",
                    "actor": None,
                    "host": gateway.name,
                    "machine": machine,
                    "field": lock.field,
                    "new_value": lock.value,
                    "tx_id": lock.tx_id,
                    "outcome": Outcome.OK if ok else Outcome.FAILED,
                    "reason": reason,
                }
                for lock in locks
            ]
        )
        _tx_status_refresh({tx_id})
        transaction.on_commit(lambda: machines_changed([machine.pk]))
        if not ok:
            actor_id = locks[0].tx.actor_id
            text = f"{machine.code} refused the change: {reason or 'rejected by its gateway'}."
            transaction.on_commit(lambda: _toast(actor_id, "error", text))
    return len(locks)


# Reconcile, safety override, expiry
# ----------------------------------


def locks_reconcile(*, machine_ids, now: datetime | None = None) -> dict[str, int]:
    """Resolve active locks of these machines against what they report:
    a critical status fails them ("safety override"); a reported value
    equal to the lock's reconciles it."""
    now = now or timezone.now()
    candidates = list(
        PendingLock.objects.filter(
            machine_id__in_array=list(machine_ids), state__in=PendingLock.ACTIVE
        )
        .select_related("machine__line", "tx")
        .order_by("pk")
    )
    if not candidates:
        return _resolve([], now=now)
    critical = critical_status_codes()
    moves = []
    for lock in candidates:
        if lock.machine.display_status in critical:
            moves.append((lock, State.FAILED, "safety override"))
        elif _same(lock.field, _truth(lock.machine, lock.field), lock.typed_value()):
            moves.append((lock, State.RECONCILED, "reported by the machine"))
    return _resolve(moves, now=now)


def locks_housekeeping(*, now: datetime | None = None) -> dict[str, int]:
    """Expire locks older than 10 s and fail locks on machines in a
    critical status. Safe to run from several processes at once: each lock
    is claimed by a conditional UPDATE."""
    now = now or timezone.now()
    active = list(
        PendingLock.objects.filter(state__in=PendingLock.ACTIVE)
        .select_related("machine__line", "tx")
        .order_by("pk")
    )
    critical = critical_status_codes()
    moves = []
    for lock in active:
        if lock.machine.display_status in critical:
            moves.append((lock, State.FAILED, "safety override"))
        elif now - lock.created_at > LOCK_TTL:
            moves.append((lock, State.EXPIRED, "not confirmed by the machine within 10 s"))
    return _resolve(moves, now=now)


def _resolve(moves, *, now) -> dict[str, int]:
    counts = {"reconciled": 0, "failed": 0, "expired": 0}
    if not moves:
        return counts
    done = []
    with transaction.atomic():
        for lock, state, reason in moves:
            claimed = PendingLock.objects.filter(pk=lock.pk, state__in=PendingLock.ACTIVE).update(
                state=state, resolved_at=now, reason=reason
            )
            if claimed:
                lock.state, lock.reason = state, reason
                done.append(lock)
                counts[str(state)] = counts.get(str(state), 0) + 1
        audit_record_many(
            [
                {
                    "action": f"lock_{lock.state}",
                    "actor": None,
                    "machine": lock.machine,
                    "field": lock.field,
                    "new_value": lock.value,
                    "tx_id": lock.tx_id,
                    "outcome": Outcome.OK if lock.state == State.RECONCILED else Outcome.FAILED,
                    "reason": lock.reason,
                }
                for lock in done
            ]
        )
        _tx_status_refresh({lock.tx_id for lock in done})
        machine_ids = sorted({lock.machine_id for lock in done})
        toasts = [
            (lock.tx.actor_id, lock.machine.code, lock.field, lock.state, lock.reason)
            for lock in done
            if lock.state != State.RECONCILED
        ]
        if machine_ids:
            transaction.on_commit(lambda: machines_changed(machine_ids))
        if toasts:
            transaction.on_commit(lambda: _notify_resolved(toasts))
    return counts


def _notify_resolved(toasts) -> None:
    for actor_id, code, field, state, reason in toasts:
        label = field.replace("_", " ")
        if state == State.EXPIRED:
            _toast(actor_id, "warning", f"{code} did not confirm the new {label} within 10 s.")
        else:
            _toast(actor_id, "error", f"The new {label} of {code} failed: {reason}.")


def _tx_status_refresh(tx_ids) -> None:
    """Derive each transaction's status from its locks' states."""
    for tx_id in tx_ids:
        states = set(PendingLock.objects.filter(tx_id=tx_id).values_list("state", flat=True))
        ControlTransaction.objects.filter(pk=tx_id).update(
            status=tx_status_for(states), updated_at=timezone.now()
        )


def tx_status_for(states: set[str]) -> str:
    S, T = State, ControlTransaction.Status
    if not states:
        return T.INFLIGHT
    if states & {S.INFLIGHT}:
        return T.INFLIGHT
    if states & {S.CONFIRMED}:
        return T.CONFIRMED if states <= {S.CONFIRMED, S.RECONCILED} else T.PARTIAL
    terminal = {S.SUPERSEDED: S.FAILED}
    ends = {terminal.get(s, s) for s in states}
    if len(ends) > 1:
        return T.PARTIAL
    return {S.RECONCILED: T.RECONCILED, S.FAILED: T.FAILED, S.EXPIRED: T.EXPIRED}[ends.pop()]
