import hashlib
import uuid
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii as json_string

from django.db import connection, transaction
from django.utils import timezone

from fleetops.db import rows_insert

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
_COLUMNS = (*_CHAINED_FIELDS, "actor_id", "prev_hash", "hash")
# Any constant works; it only has to be the same for every writer.
_CHAIN_LOCK_KEY = 0x46_4C_45_45_54  # "FLEET"


# The hashed payload is the JSON object of the chained fields with sorted
# keys and no spaces, every value a string: json.dumps(body, sort_keys=True,
# separators=(",", ":")). It is written out here key by key, which gives the
# same text at a third less cost (json.dumps sets up an encoder per call); a
# workbook of a thousand machines hashes four thousand events in one request.
_PAYLOAD_FIELDS = tuple((name, f'"{name}":') for name in sorted(_CHAINED_FIELDS))


def _event_hash(values) -> str:
    """The chain hash of one event, from its field values (a mapping or a
    saved AuditEvent): the predecessor's hash and the chained fields."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
    body = {name: get(name) for name in _CHAINED_FIELDS}
    body["at"] = body["at"].isoformat()
    body["tx_id"] = str(body["tx_id"]) if body["tx_id"] else ""
    body["uid"] = str(body["uid"])
    payload = ",".join([label + json_string(body[name]) for name, label in _PAYLOAD_FIELDS])
    return hashlib.sha256((get("prev_hash") + "{" + payload + "}").encode()).hexdigest()


def audit_record(
    *,
    action: str,
    actor=None,
    host: str = "",
    machine=None,
    line=None,
    field: str = "",
    old_value="",
    new_value="",
    tx_id=None,
    outcome: str = AuditEvent.Outcome.OK,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain and return it saved.

    Call it inside the transaction that makes the change, so the change and
    its record commit or roll back together.
    """
    with _chain_head() as prev:
        values = _event_values(
            at=timezone.now(),
            prev_hash=prev,
            action=action,
            actor=actor,
            host=host,
            machine=machine,
            line=line,
            field=field,
            old_value=old_value,
            new_value=new_value,
            tx_id=tx_id,
            outcome=outcome,
            reason=reason,
        )
        return AuditEvent.objects.create(**values)


def _event_values(
    *,
    at,
    prev_hash,
    action,
    actor=None,
    host="",
    machine=None,
    line=None,
    field="",
    old_value="",
    new_value="",
    tx_id=None,
    outcome=AuditEvent.Outcome.OK,
    reason="",
) -> dict:
    values = {
        "at": at,
        "actor_id": actor.pk if getattr(actor, "is_authenticated", False) else None,
        "actor_label": getattr(actor, "username", "") or (str(actor) if actor else "system"),
        "host": host[:255],
        "action": action,
        "machine_code": getattr(machine, "code", "") or "",
        "line_code": getattr(line or getattr(machine, "line", None), "code", "") or "",
        # A field named after its subject (`temp_01.high_alert`, `alice.role`)
        # can outgrow the column; the change it records must not fail for it.
        "field": field[:64],
        "old_value": audit_text(old_value),
        "new_value": audit_text(new_value),
        "tx_id": tx_id,
        "outcome": outcome,
        "reason": reason,
        "prev_hash": prev_hash,
        "uid": uuid.uuid4(),
    }
    values["hash"] = _event_hash(values)
    return values


def audit_text(value) -> str:
    """A value as the audit writes it: numbers as numbers (an integral float
    is written 1500, not 1500.0), None as empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@contextmanager
def _chain_head():
    """The hash the next event chains to, with the chain locked for the
    enclosing transaction. Writers are serialised (an advisory lock on
    PostgreSQL, SQLite's IMMEDIATE transactions) so two events never claim
    the same predecessor."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
        yield AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS


def audit_record_many(events: list[dict]) -> int:
    """Append several events at once (one lock, one COPY): a workbook of a
    thousand machines writes its thousands of events in one go. Returns how
    many were written; the new rows are not read back (`audit_record`
    returns the saved event)."""
    if not events:
        return 0
    now = timezone.now()
    with _chain_head() as prev:
        rows = []
        for fields in events:
            values = _event_values(at=now, prev_hash=prev, **fields)
            prev = values["hash"]
            rows.append(values)
        return rows_insert(AuditEvent, _COLUMNS, ([row[c] for c in _COLUMNS] for row in rows))


def audit_record_changes(
    *, action: str, before: dict, after: dict, subject: str = "", **common
) -> int:
    """One event per field whose value changed from `before` to `after`
    (a field missing from `before` was empty): one field per event, old and
    new written as every other event writes them. `subject` names what the
    field belongs to when that is not the machine, e.g. the sensor key, and
    the field then reads `temp_01.high_alert`. Returns how many were written."""
    prefix = f"{subject}." if subject else ""
    return audit_record_many(
        [
            {
                **common,
                "action": action,
                "field": prefix + name,
                "old_value": before.get(name),
                "new_value": after.get(name),
            }
            for name in after
            if audit_text(before.get(name)) != audit_text(after.get(name))
        ]
    )


def audit_chain_verify() -> int | None:
    """Walk the chain; return the id of the first broken event, or None."""
    prev = GENESIS
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev or _event_hash(event) != event.hash:
            return event.id
        prev = event.hash
    return None
