"""Commands to gateways, and their answers.

A command goes out only after the transaction that created its locks has
committed (callers queue `commands_dispatch` with `transaction.on_commit`);
a gateway that (re)connects is sent what is still inflight. Its ack
confirms the locks, its nack fails them.
"""

import logging
import uuid
from collections import defaultdict
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record_many
from apps.live import push
from apps.plant.models import Gateway, Machine

from ..models import PendingLock, typed
from .notices import toast
from .transactions import tx_status_refresh

logger = logging.getLogger(__name__)

State = PendingLock.State

# What a command needs of each lock, read as plain rows (a workbook's
# transaction has thousands of locks; no model instances needed).
_COMMAND_FIELDS = ("tx_id", "machine_id", "machine__code", "field", "value", "tx__expires_at")


def gateway_group(gateway_id: int) -> str:
    return f"gateway.{gateway_id}"


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
    gateways = _gateways_of(machine_ids=list(codes))
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


def _gateways_of(*, machine_ids: list[int]) -> dict[int, list[int]]:
    """machine id -> ids of the unrevoked gateways bound to it."""
    gateways = defaultdict(list)
    for gw_id, machine_id in Gateway.machines.through.objects.filter(
        machine_id__in_array=machine_ids, gateway__revoked_at__isnull=True
    ).values_list("gateway_id", "machine_id"):
        gateways[machine_id].append(gw_id)
    return gateways


def commands_dispatch(*, tx_id) -> int:
    """Send the transaction's commands to the gateways of its machines."""
    locks = PendingLock.objects.filter(tx_id=tx_id, state=State.INFLIGHT).order_by("pk")
    payloads = command_payloads(locks=locks)
    # One channel-layer message per gateway, however many machines a
    # workbook touched: a thousand commands are one send, not a thousand.
    by_gateway: dict[int, list[dict]] = defaultdict(list)
    for gateway_id, command in payloads:
        by_gateway[gateway_id].append(command)
    async_to_sync(_send_all)(by_gateway)
    return len(payloads)


async def _send_all(by_gateway: dict[int, list[dict]]) -> None:
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
        _answer_apply(locks, ok=ok, reason=reason, now=now)
        audit_record_many(
            [_answer_event(lock, gateway, machine, ok=ok, reason=reason) for lock in locks]
        )
        tx_status_refresh({tx_id})
        transaction.on_commit(lambda: push.machines_changed([machine.pk]))
        if not ok:
            actor_id = locks[0].tx.actor_id
            text = f"{machine.code} refused the change: {reason or 'rejected by its gateway'}."
            transaction.on_commit(lambda: toast(actor_id, "error", text))
    return len(locks)


def _answer_apply(locks: list[PendingLock], *, ok: bool, reason: str, now) -> None:
    for lock in locks:
        if ok:
            lock.state, lock.confirmed_at = State.CONFIRMED, now
        else:
            lock.state, lock.resolved_at = State.FAILED, now
            lock.reason = f"rejected by gateway: {reason}"[:200] if reason else "rejected"
    PendingLock.objects.bulk_update(locks, ["state", "confirmed_at", "resolved_at", "reason"])


def _answer_event(lock: PendingLock, gateway: Gateway, machine: Machine, *, ok, reason) -> dict:
    return {
        "action": "command_ack" if ok else "command_nack",
        "actor": None,
        "host": gateway.name,
        "machine": machine,
        "field": lock.field,
        "new_value": lock.value,
        "tx_id": lock.tx_id,
        "outcome": AuditEvent.Outcome.OK if ok else AuditEvent.Outcome.FAILED,
        "reason": reason,
    }
