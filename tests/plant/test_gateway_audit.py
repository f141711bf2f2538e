"""Gateway credentials issued or revoked outside the admin (commands, the
demo seed) are audited the same way: one field per event, never the token."""

import pytest

from apps.audit.models import AuditEvent
from apps.plant.services import gateway_issue, gateway_revoke

pytestmark = pytest.mark.django_db


def test_issuing_a_gateway_audits_its_name_and_its_machines_as_two_events(plant, admin_user):
    machines = [plant.machines["m:402"], plant.machines["m:401"]]
    gateway, token = gateway_issue(
        name="gw-cmd", machines=machines, actor=admin_user, host="10.1.2.3"
    )
    events = list(
        AuditEvent.objects.filter(action__startswith="gateway_")
        .order_by("id")
        .values_list("action", "field", "old_value", "new_value", "host")
    )
    assert events == [
        ("gateway_issue", "gateway", "", "gw-cmd", "10.1.2.3"),
        ("gateway_machines", "gw-cmd.machines", "", "m:401, m:402", "10.1.2.3"),
    ]
    assert not AuditEvent.objects.filter(new_value__contains=token).exists()
    assert not AuditEvent.objects.filter(reason__contains=token).exists()


def test_revoking_a_gateway_records_who_and_from_where(plant, admin_user):
    gateway, _token = gateway_issue(name="gw-old", machines=[plant.machines["m:401"]])
    gateway_revoke(gateway=gateway, actor=admin_user, host="10.9.9.9")
    event = AuditEvent.objects.get(action="gateway_revoke")
    assert (event.field, event.old_value, event.host, event.actor) == (
        "gateway",
        "gw-old",
        "10.9.9.9",
        admin_user,
    )
    assert gateway.revoked_at is not None
