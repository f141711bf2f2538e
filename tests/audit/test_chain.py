import pytest
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_verify, audit_record


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
