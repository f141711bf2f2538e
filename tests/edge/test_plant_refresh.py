"""A running gateway keeps its plant current: the cache follows each answer
of GET /api/v1/gateway and the simulator follows a changed one."""

from datetime import UTC, datetime
from types import SimpleNamespace

from apps.edge.plant import plant_parse, plant_select
from apps.edge.plant_cache import PlantCache
from apps.edge.plant_refresh import PlantRefresh
from apps.edge.sender import Backoff

from .test_plant import ANSWER

CHANGED = {
    "name": "gw-7",
    "machines": [
        ANSWER["machines"][0],
        {"code": "m:403", "sensors": [{"key": "speed", "unit": "rpm"}]},
    ],
}


def refresh_for(url, tmp_path, agent=None, *, cached=False, **kwargs):
    cache = PlantCache(tmp_path / "gw-7.plant.json", "fo_gw-7")
    known = plant_parse(ANSWER)
    if cached:
        known.cached_at = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    refresh = PlantRefresh(
        url,
        "fo_gw-7",
        cache=cache,
        known=known,
        every=300,
        backoff=Backoff(base=1, cap=1),
        **kwargs,
    )
    return refresh.bind(agent) if agent else refresh


def test_it_follows_a_plant_that_changed_on_the_server(server, make_agent, tmp_path):
    lines = []
    agent = make_agent(server.url, lines=lines, machines=plant_parse(ANSWER).machine_sensors)
    refresh = refresh_for(server.url, tmp_path, agent)
    server.plant = CHANGED
    assert refresh.refresh_once() == 300
    assert refresh.cache.load()[0] == CHANGED
    assert lines == [
        "plant changed on the server (machines added: m:403; machines removed: m:402): "
        "now simulating 2 machines"
    ]
    frames = agent.simulator.step(1)
    assert [f["machine"] for f in frames] == ["m:401", "m:403"]


def test_it_asks_again_soon_while_running_from_the_cache(server, down_url, tmp_path):
    lines = []
    refresh = refresh_for(down_url, tmp_path, SimpleNamespace(out=lines.append), cached=True)
    assert refresh.refresh_once() <= 1  # the backoff, not the 5 minutes
    assert not refresh.cache.path.exists()

    server.plant = ANSWER
    refresh.server = server.url
    assert refresh.refresh_once() == 300  # back to the slow pace once answered
    assert refresh.cache.load()[0] == ANSWER
    assert lines == [f"plant refreshed from the server at {server.url}"]
    assert refresh.known.cached_at is None


def test_it_keeps_the_cache_when_the_server_refuses_the_token(server, tmp_path):
    lines = []
    refresh = refresh_for(server.url, tmp_path, SimpleNamespace(out=lines.append))
    refresh.cache.save(ANSWER)
    before = refresh.cache.path.read_text()
    server.token_refused = True
    assert refresh.refresh_once() == 300
    assert refresh.cache.path.read_text() == before
    assert lines == ["plant refresh: the server refused the gateway token (unknown or revoked)"]


def test_it_simulates_on_unchanged_when_a_chosen_machine_was_unbound(server, make_agent, tmp_path):
    lines = []
    agent = make_agent(server.url, lines=lines, machines=plant_parse(ANSWER).machine_sensors)

    def only_402(plant):
        return plant_select(plant, only=["m:402"])

    refresh = refresh_for(server.url, tmp_path, agent, select=only_402)
    server.plant = CHANGED
    refresh.refresh_once()
    assert [m.code for m in agent.simulator.machines] == ["m:401", "m:402"]
    assert "not bound to this token: m:402; simulating it unchanged" in lines[0]
