"""A refused setpoint request is on record one field per event, with the
value asked for written as the operator sent it (numbers as numbers)."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

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


def test_a_machine_that_e_stops_between_the_check_and_the_lock_is_refused_and_audited(
    plant, operator1, monkeypatch
):
    """The race the re-check under the row lock exists for: the refusal is
    on record like any other, and no lock or transaction is left."""
    from apps.control.models import ControlTransaction, PendingLock
    from apps.control.services import requests
    from apps.plant.models import Machine

    lock = requests._machines_lock

    def e_stop_then_lock(machines):
        Machine.objects.filter(code="m:401").update(status_id="EMERGENCY_STOP")
        return lock(machines)

    monkeypatch.setattr(requests, "_machines_lock", e_stop_then_lock)
    with pytest.raises(ValidationError, match="m:401 is in EMERGENCY_STOP"):
        services.setpoint_request(
            actor=operator1,
            machine=plant.machines["m:401"],
            changes={"target_speed": 1200},
            host="10.0.0.8",
        )
    event = AuditEvent.objects.get(action="setpoint_request")
    assert (event.outcome, event.field, event.new_value, event.reason) == (
        "denied",
        "target_speed",
        "1200",
        "machine in EMERGENCY_STOP",
    )
    assert not ControlTransaction.objects.exists() and not PendingLock.objects.exists()
