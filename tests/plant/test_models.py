import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from apps.plant.models import Machine, Sensor


def test_it_rejects_a_machine_code_without_the_m_prefix(plant):
    machine = Machine(code="401", name="x", line=plant.lines["01"])
    with pytest.raises(ValidationError) as excinfo:
        machine.full_clean()
    assert "m:401" in str(excinfo.value.message_dict["code"])


@pytest.mark.parametrize("code", ["m:", "m:4a", "M:401", "m:401 ", "m-401"])
def test_it_rejects_malformed_machine_codes(plant, code):
    with pytest.raises(ValidationError):
        Machine(code=code, name="x", line=plant.lines["01"]).full_clean()


def test_it_reports_a_duplicate_machine_code_as_a_validation_error(plant):
    with pytest.raises(ValidationError) as excinfo:
        Machine(code="m:401", name="again", line=plant.lines["02"]).full_clean()
    assert "already exists" in str(excinfo.value.message_dict["code"])


def test_it_refuses_a_duplicate_machine_code_in_the_database(plant):
    with pytest.raises(IntegrityError):
        Machine.objects.create(code="m:401", name="again", line=plant.lines["02"])


def test_it_refuses_a_low_alert_above_the_high_alert(plant):
    sensor = Sensor(
        machine=plant.machines["m:401"], key="oil", label="Oil", low_alert=9, high_alert=1
    )
    with pytest.raises(ValidationError) as excinfo:
        sensor.full_clean()
    assert "low alert threshold" in str(excinfo.value)


def test_it_shows_the_maintenance_lock_over_the_reported_status(plant):
    machine = plant.machines["m:401"]
    machine.status_id = "RUNNING"
    assert machine.display_status == "RUNNING"
    from django.utils import timezone

    machine.maintenance_locked_at = timezone.now()
    assert machine.display_status == "MAINTENANCE_LOCK"
