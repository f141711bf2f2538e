"""What the gateway simulates comes from the server's GET /api/v1/gateway."""

import json
import stat
import threading
from datetime import UTC, datetime

import pytest

from apps.edge.plant import (
    GatewayPlant,
    PlantError,
    PlantUnavailable,
    plant_fetch,
    plant_parse,
    plant_select,
    plant_wait,
)
from apps.edge.plant_cache import PlantCache
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


def wait(url, cache, lines):
    """plant_wait that gives up (None) at its first wait instead of backing off."""
    stopping = threading.Event()

    def out(line):
        lines.append(line)
        if line.startswith("waiting"):
            stopping.set()

    backoff = Backoff(base=0.01, cap=0.01)
    return plant_wait(url, "fo_gw-7", stopping=stopping, backoff=backoff, out=out, cache=cache)


@pytest.fixture
def cache(tmp_path):
    return PlantCache(tmp_path / "edge" / "gw-7.plant.json", "fo_gw-7")


def test_it_keeps_the_servers_answer_for_the_next_start(server, cache):
    server.plant = ANSWER
    lines = []
    plant = wait(server.url, cache, lines)
    assert lines == [f"plant from the server at {server.url}"]
    assert plant.cached_at is None
    record = json.loads(cache.path.read_text())
    assert record["answer"] == ANSWER
    assert "fo_gw-7" not in cache.path.read_text()  # a fingerprint, never the token
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert list(cache.path.parent.iterdir()) == [cache.path]  # no temporary file left


def test_it_replaces_the_cache_with_each_answer(server, cache):
    cache.save({"name": "gw-7", "machines": []}, now=datetime(2026, 1, 1, tzinfo=UTC))
    server.plant = ANSWER
    wait(server.url, cache, [])
    document, saved_at = cache.load()
    assert document == ANSWER
    assert saved_at > datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("why", ["refused", "503", "404"])
def test_it_starts_from_the_cache_when_the_server_cannot_answer(server, down_url, cache, why):
    cache.save(ANSWER, now=datetime(2026, 12, 3, 6, 15, 2, tzinfo=UTC))
    url = down_url if why == "refused" else server.url
    server.plant_unavailable = why == "503"  # "404": server.plant is None
    lines = []
    plant = wait(url, cache, lines)
    assert plant == plant_parse(ANSWER)
    assert plant.cached_at == datetime(2026, 12, 3, 6, 15, 2, tzinfo=UTC)
    assert len(lines) == 1
    assert lines[0].startswith("plant from the cache of 2026-12-03 06:15:02Z, server unreachable")


def test_it_stops_on_a_refused_token_even_with_a_cache(server, cache):
    cache.save(ANSWER)
    server.token_refused = True
    with pytest.raises(PlantError, match="refused the gateway token"):
        wait(server.url, cache, [])


def test_it_waits_without_a_cache_and_says_so(down_url, cache):
    lines = []
    assert wait(down_url, cache, lines) is None
    assert lines[0].startswith(f"waiting for the server at {down_url} (ConnectionRefused")
    assert f"no cached plant at {cache.path}" in lines[0]


def test_it_does_not_start_from_another_tokens_cache(down_url, cache):
    PlantCache(cache.path, "fo_other-gateway").save(ANSWER)
    lines = []
    assert wait(down_url, cache, lines) is None
    assert "was given to another token" in lines[0]


def test_it_waits_when_the_cache_is_unreadable(down_url, cache):
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text("{half a wri")
    lines = []
    assert wait(down_url, cache, lines) is None
    assert "unreadable cached plant" in lines[0]


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
