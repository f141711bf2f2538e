"""What the gateway simulates comes from the server's GET /api/v1/gateway."""

import threading

import pytest

from apps.edge.plant import (
    GatewayPlant,
    PlantError,
    PlantUnavailable,
    plant_fetch,
    plant_select,
    plant_wait,
)
from apps.edge.sender import Backoff
from apps.edge.simulator import SensorSpec

ANSWER = {
    "name": "gw-7",
    "machines": [
        {
            "code": "m:401",
            "sensors": [
                {"key": "speed", "unit": "rpm", "low_alert": None, "high_alert": 3100.0},
                {"key": "temp", "unit": "°C", "low_alert": 5.0, "high_alert": 95.0},
            ],
        },
        {"code": "m:402", "sensors": [{"key": "speed", "unit": "rpm"}]},
    ],
}


def test_it_reads_the_machines_and_sensors_the_server_lists(server):
    server.plant = ANSWER
    plant = plant_fetch(server.url, "fo_gw-7")
    assert plant.name == "gw-7"
    assert plant.machine_sensors == {
        "m:401": [SensorSpec("speed", "rpm", None, 3100.0), SensorSpec("temp", "°C", 5.0, 95.0)],
        "m:402": [SensorSpec("speed", "rpm")],
    }
    assert server.plant_headers[0]["Authorization"] == "Bearer fo_gw-7"


def test_it_calls_a_server_without_an_answer_unavailable(server, down_url):
    with pytest.raises(PlantUnavailable, match="HTTP 404"):
        plant_fetch(server.url, "fo_gw-7")  # server.plant is None: 404
    with pytest.raises(PlantUnavailable, match="ConnectionRefused"):
        plant_fetch(down_url, "fo_gw-7")


def test_it_stops_waiting_when_told_to(down_url):
    stopping = threading.Event()
    lines = []

    def out(line):
        lines.append(line)
        stopping.set()

    backoff = Backoff(base=0.01, cap=0.01)
    assert plant_wait(down_url, "fo", stopping=stopping, backoff=backoff, out=out) is None
    assert lines and lines[0].startswith(f"waiting for the server at {down_url}")


PLANT = GatewayPlant(
    "gw-7", {"m:401": [SensorSpec("speed"), SensorSpec("temp")], "m:402": [SensorSpec("speed")]}
)


def test_it_narrows_to_the_named_machines_and_sensors():
    picked = plant_select(PLANT, only=["m:402", "m:401"], sensors=1, name="bench")
    assert picked.name == "bench"
    assert picked.machine_sensors == {
        "m:401": [SensorSpec("speed")],
        "m:402": [SensorSpec("speed")],
    }
    assert plant_select(PLANT).machine_sensors == PLANT.machine_sensors


def test_it_refuses_machines_the_token_is_not_bound_to():
    with pytest.raises(PlantError, match="not bound to this token: m:601"):
        plant_select(PLANT, only=["m:401", "m:601"])
    with pytest.raises(PlantError, match="bound to no machine"):
        plant_select(GatewayPlant("idle", {}))
