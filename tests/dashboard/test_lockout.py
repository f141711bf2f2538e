"""The console's maintenance lock-out reads as what it is, with its reason,
apart from any status the machine reports."""

import pytest

from apps.plant.services import machine_set_maintenance_lock

pytestmark = pytest.mark.django_db


def test_a_locked_out_machine_says_so_with_the_reason_on_its_page_and_its_line(
    client, plant, admin_user, operator1
):
    machine_set_maintenance_lock(
        machines=[plant.machines["m:402"]], actor=admin_user, locked=True, reason="bearing swap"
    )
    client.force_login(operator1)
    page = client.get("/machines/m:402/").content.decode()
    line = client.get("/lines/01/").content.decode()
    for html in (page, line):
        assert "LOCKED OUT by console: bearing swap" in html
    row = line[
        line.index('id="machine-row-m402"') : line.index(
            "</tr>", line.index('id="machine-row-m402"')
        )
    ]
    assert "MAINTENANCE_LOCK" in row
    other = line[
        line.index('id="machine-row-m401"') : line.index(
            "</tr>", line.index('id="machine-row-m401"')
        )
    ]
    assert "LOCKED OUT" not in other


def test_a_machine_reporting_maintenance_lock_itself_is_not_called_locked_out(
    client, plant, operator1
):
    from apps.plant.models import Machine

    Machine.objects.filter(code="m:401").update(status_id="MAINTENANCE_LOCK")
    client.force_login(operator1)
    page = client.get("/machines/m:401/").content.decode()
    assert "MAINTENANCE_LOCK" in page
    assert "LOCKED OUT by console" not in page
