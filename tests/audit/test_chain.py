import uuid

import pytest
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_verify, audit_record, audit_record_many


def test_each_event_links_to_the_one_before(db):
    first = audit_record(action="a", new_value="1")
    second = audit_record(action="b", new_value="2")
    assert second.prev_hash == first.hash
    assert audit_chain_verify() is None


def test_tampering_with_a_stored_event_breaks_the_chain(db):
    audit_record(action="a", new_value="100")
    victim = audit_record(action="b", new_value="200")
    audit_record(action="c", new_value="300")
    if connection.vendor == "postgresql":
        # Only a superuser bypassing the trigger could do this.
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
            cursor.execute("UPDATE audit_auditevent SET new_value='999' WHERE id=%s", [victim.id])
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
    else:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE audit_auditevent SET new_value='999' WHERE id=%s", [victim.id])
    assert audit_chain_verify() == victim.id


def test_the_application_cannot_update_or_delete_events(db):
    event = audit_record(action="a")
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.all().update(reason="x")
    with pytest.raises(TypeError):
        AuditEvent.objects.all().delete()


@pytest.mark.services
def test_the_database_refuses_update_and_delete_on_postgresql(db):
    from django.db import DatabaseError

    event = audit_record(action="a")
    for sql in [
        "UPDATE audit_auditevent SET reason='x' WHERE id=%s",
        "DELETE FROM audit_auditevent WHERE id=%s",
    ]:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.id])


def test_a_batch_is_chained_in_order_and_reads_back_as_written(plant, operator1):
    machine = plant.machines["m:401"]
    tx_id = uuid.uuid4()
    written = audit_record_many(
        [
            {"action": "setpoint_request", "actor": operator1, "machine": machine,
             "field": "target_speed", "old_value": 1200, "new_value": "1500", "tx_id": tx_id},
            {"action": "setpoint_request", "actor": None, "machine": machine, "field": "mode",
             "old_value": None, "new_value": "RUN", "reason": "=HYPERLINK(\"x\")"},
        ]
    )  # fmt: skip
    after = audit_record(action="note")
    assert written == 2
    first, second = AuditEvent.objects.order_by("id")[:2]
    assert (first.actor, first.actor_label, first.machine_code, first.line_code) == (
        operator1,
        "operator1",
        "m:401",
        "01",
    )
    assert (first.old_value, first.new_value, first.tx_id) == ("1200", "1500", tx_id)
    assert (second.actor, second.actor_label, second.old_value) == (None, "system", "")
    assert second.reason == '=HYPERLINK("x")'
    assert second.prev_hash == first.hash and after.prev_hash == second.hash
    assert audit_chain_verify() is None


def test_the_hash_is_still_of_the_canonical_json_so_older_chains_verify(plant, operator1):
    """Events hashed before the payload was written out by hand must still
    verify: the hash is sha256(prev_hash + json.dumps(chained fields,
    sort_keys=True, separators=(",", ":")))."""
    import hashlib
    import json

    from apps.audit.services import _CHAINED_FIELDS

    awkward = 'quote " backslash \\ tab \t newline \n unit sep \x1f é ☃ </script> =HYPERLINK("x")'
    event = audit_record(
        action="setpoint_request",
        actor=operator1,
        host="10.0.0.7",
        machine=plant.machines["m:401"],
        field="mode",
        old_value=awkward,
        new_value="RUN",
        tx_id=uuid.uuid4(),
        reason=awkward[::-1],
    )
    body = {name: getattr(event, name) for name in _CHAINED_FIELDS}
    body |= {"at": event.at.isoformat(), "tx_id": str(event.tx_id), "uid": str(event.uid)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert event.hash == hashlib.sha256((event.prev_hash + canonical).encode()).hexdigest()
    assert audit_chain_verify() is None


def test_numbers_are_written_as_numbers_by_every_write_path(db):
    audit_record(action="one", old_value=1500.0, new_value=1500.5)
    audit_record_many(
        [
            {"action": "many", "old_value": 3100.0, "new_value": None},
            {"action": "many", "old_value": 0.0, "new_value": 7},
        ]
    )
    written = AuditEvent.objects.order_by("id").values_list("old_value", "new_value")
    assert list(written) == [("1500", "1500.5"), ("3100", ""), ("0", "7")]


def test_a_change_of_several_fields_writes_one_event_per_changed_field(db):
    from apps.audit.services import audit_record_changes

    written = audit_record_changes(
        action="sensor_change",
        before={"low_alert": 5.0, "high_alert": 95.0},
        after={"low_alert": 5, "high_alert": 90.0, "unit": None},
        subject="temp",
        host="10.0.0.7",
    )
    events = AuditEvent.objects.order_by("id")
    assert written == 1
    assert [(e.field, e.old_value, e.new_value, e.host) for e in events] == [
        ("temp.high_alert", "95", "90", "10.0.0.7")
    ]
