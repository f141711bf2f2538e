"""A refused setpoint request is on record one field per event, with the
value asked for written as the operator sent it (numbers as numbers)."""

import pytest
from django.core.exceptions import PermissionDenied

from apps.audit.models import AuditEvent
from apps.control import services

pytestmark = pytest.mark.django_db


def test_a_request_for_a_line_not_operated_is_audited_one_field_per_event(plant, operator1):
    with pytest.raises(PermissionDenied):
        services.setpoint_request(
            actor=operator1,
            machine=plant.machines["m:601"],
            changes={"target_speed": 1500, "mode": "IDLE"},
            host="10.0.0.7",
        )
    events = sorted(
        AuditEvent.objects.filter(action="setpoint_request").values_list(
            "machine_code", "field", "new_value", "outcome", "host"
        )
    )
    assert events == [
        ("m:601", "mode", "IDLE", "denied", "10.0.0.7"),
        ("m:601", "target_speed", "1500", "denied", "10.0.0.7"),
    ]
