"""apps.telemetry.alerts builds on the selectors' private helpers; this
pins that contract."""

import pytest

from apps.telemetry.alerts import alerts_by_machine, machine_ids_with_alerts

from .conftest import frame

pytestmark = pytest.mark.django_db


def test_it_maps_machines_to_their_alerts_in_bulk(send, plant):
    response = send(
        {
            "batch_id": "1",
            "frames": [
                frame("m:401", readings={"temp": 120.0}),
                frame("m:402", readings={"temp": 50.0}),
            ],
        }
    )
    assert response.status_code == 202
    ids = [plant.machines[c].pk for c in ("m:401", "m:402", "m:403")]
    found = alerts_by_machine(machine_ids=ids)
    assert list(found) == [plant.machines["m:401"].pk]
    assert [a["sensor"] for a in found[plant.machines["m:401"].pk]] == ["temp"]
    assert machine_ids_with_alerts(machine_ids=ids) == [plant.machines["m:401"].pk]
    assert alerts_by_machine(machine_ids=[]) == {}
