import hashlib
import json

from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEvent

GENESIS = "0" * 64
_CHAINED_FIELDS = (
    "at",
    "actor_label",
    "host",
    "action",
    "machine_code",
    "line_code",
    "field",
    "old_value",
    "new_value",
    "tx_id",
    "outcome",
    "reason",
    "uid",
)
# Any constant works; it only has to be the same for every writer.
_CHAIN_LOCK_KEY = 0x46_4C_45_45_54  # "FLEET"


def _event_hash(event: AuditEvent) -> str:
    body = {name: getattr(event, name) for name in _CHAINED_FIELDS}
    body["at"] = event.at.isoformat()
    body["tx_id"] = str(event.tx_id) if event.tx_id else ""
    body["uid"] = str(event.uid)
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((event.prev_hash + payload).encode()).hexdigest()


def audit_record(
    *,
    action: str,
    actor=None,
    host: str = "",
    machine=None,
    field: str = "",
    old_value="",
    new_value="",
    tx_id=None,
    outcome: str = AuditEvent.Outcome.OK,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain.

    Call it inside the transaction that makes the change, so the change and
    its record commit or roll back together. Writers are serialised (an
    advisory lock on PostgreSQL, SQLite's IMMEDIATE transactions) so two
    events never claim the same predecessor.
    """
    return audit_record_many(
        [
            {
                "action": action,
                "actor": actor,
                "host": host,
                "machine": machine,
                "field": field,
                "old_value": old_value,
                "new_value": new_value,
                "tx_id": tx_id,
                "outcome": outcome,
                "reason": reason,
            }
        ]
    )[0]


def _event(
    *,
    prev_hash,
    action,
    actor=None,
    host="",
    machine=None,
    field="",
    old_value="",
    new_value="",
    tx_id=None,
    outcome=AuditEvent.Outcome.OK,
    reason="",
) -> AuditEvent:
    return AuditEvent(
        at=timezone.now(),
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        actor_label=getattr(actor, "username", "") or (str(actor) if actor else "system"),
        host=host[:255],
        action=action,
        machine_code=getattr(machine, "code", "") or "",
        line_code=getattr(getattr(machine, "line", None), "code", "") or "",
        field=field,
        old_value="" if old_value is None else str(old_value),
        new_value="" if new_value is None else str(new_value),
        tx_id=tx_id,
        outcome=outcome,
        reason=reason,
        prev_hash=prev_hash,
    )


def audit_record_many(events: list[dict]) -> list[AuditEvent]:
    """Append several events at once (one lock, one INSERT): a workbook of
    a thousand machines writes a thousand events in one go."""
    if not events:
        return []
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
        prev = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS
        rows = []
        for fields in events:
            event = _event(prev_hash=prev, **fields)
            event.hash = _event_hash(event)
            prev = event.hash
            rows.append(event)
        AuditEvent.objects.bulk_create(rows, batch_size=1000)
    return rows


def audit_chain_verify() -> int | None:
    """Walk the chain; return the id of the first broken event, or None."""
    prev = GENESIS
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev or _event_hash(event) != event.hash:
            return event.id
        prev = event.hash
    return None
