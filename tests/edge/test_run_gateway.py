import json
import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.edge.plant import plant_wait
from apps.edge.plant_cache import PlantCache
from apps.edge.queue import OfflineQueue
from apps.edge.sender import HttpSender
from apps.plant.services import demo_sensor_specs, gateway_issue
from tests.support.processes import ROOT

from .fake_gateway import FakeGatewayServer
from .fake_server import FakeTelemetryServer
from .support import command


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("run_gateway", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def gateway_answer(client, token: str) -> dict:
    """What the real server's GET /api/v1/gateway says for this token."""
    response = client.get("/api/v1/gateway", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def token(plant, server, client):
    """gw-7, bound to m:401, m:402 and m:501; the fake server answers for it
    as the real one does."""
    machines = [plant.machines["m:401"], plant.machines["m:402"], plant.machines["m:501"]]
    _gateway, token = gateway_issue(name="gw-7", machines=machines)
    server.plant = gateway_answer(client, token)
    return token


def test_it_simulates_the_machines_bound_to_its_token(server, token, tmp_path):
    out, _ = run(
        *("--token", token, "--server", server.url, "--queue", str(tmp_path / "q.sqlite3")),
        *"--machines m:401,m:402 --rate 10 --duration 0.5 --seed 1".split(),
        *"--fault m:402:EMERGENCY_STOP@0.2".split(),
    )
    assert "Gateway gw-7: 2 machines, 12 sensors, 10 frames/s each" in out
    assert list(server.stored) == [f"gw-7:{n:06d}" for n in range(1, 6)]
    frames = [f for frames in server.stored.values() for f in frames]
    assert {f["machine"] for f in frames} == {"m:401", "m:402"}
    assert list(frames[0]["readings"]) == [spec[0] for spec in demo_sensor_specs(6)]
    statuses = [f["status"] for f in frames if f["machine"] == "m:402"]
    assert statuses == ["RUNNING", "RUNNING", "EMERGENCY_STOP", "EMERGENCY_STOP", "EMERGENCY_STOP"]
    assert server.headers[0]["Authorization"] == f"Bearer {token}"
    assert server.plant_headers[0]["Authorization"] == f"Bearer {token}"
    assert "delivered 10 frames" in out and "0 batches still queued" in out


def test_it_takes_the_token_from_a_file(server, token, tmp_path):
    (tmp_path / "gw-7.token").write_text(f"{token}\n")
    out, _ = run(
        *("--token-file", str(tmp_path / "gw-7.token"), "--server", server.url),
        *("--queue", str(tmp_path / "q.sqlite3"), "--machines", "m:401"),
        *"--rate 10 --duration 0.2 --no-commands".split(),
    )
    assert server.headers[0]["Authorization"] == f"Bearer {token}"
    assert "delivered 2 frames" in out


def test_it_waits_for_a_server_that_starts_after_it(token, tmp_path, client):
    """`make run` starts the gateway and the server together: start order must not matter."""
    late = FakeTelemetryServer()
    late.plant = gateway_answer(client, token)
    starter = threading.Timer(0.6, late.start)
    starter.start()
    try:
        out, _ = run(
            *("--token", token, "--server", late.url, "--queue", str(tmp_path / "q.sqlite3")),
            *"--machines m:401 --rate 10 --duration 0.3 --backoff-cap 0.2 --no-commands".split(),
        )
    finally:
        starter.join()
        late.stop()
    assert f"waiting for the server at {late.url}" in out
    assert f"no cached plant at {tmp_path / 'q.plant.json'}" in out
    assert f"plant from the server at {late.url}" in out
    assert "Gateway gw-7: 1 machines, 6 sensors" in out
    assert "delivered 3 frames" in out


def test_it_stops_when_the_server_refuses_its_token(server, tmp_path):
    server.token_refused = True
    with pytest.raises(CommandError, match="refused the gateway token"):
        run(
            *("--token", "fo_revoked", "--server", server.url),
            *("--queue", str(tmp_path / "q.sqlite3"), "--duration", "0"),
        )


def test_it_records_from_its_cached_plant_while_the_server_is_down(server, token, tmp_path):
    """A gateway rebooted during an outage: its queue keeps every frame,
    delivered exactly once when the server is back."""
    path = tmp_path / "q.sqlite3"
    options = [*("--token", token, "--server", server.url, "--queue", str(path))]
    options += "--machines m:401 --rate 10 --no-commands --backoff-cap 0.05".split()
    out, _ = run(*options, "--duration", "0.2")
    assert f"plant from the server at {server.url}" in out
    cached_at = json.loads((tmp_path / "q.plant.json").read_text())["saved_at"]

    server.stop()
    # A gateway that waits for the server instead gets it back after 10 s, and fails below.
    rescue = threading.Timer(10, server.start)
    rescue.start()
    try:
        out, _ = run(*options, "--duration", "0.5", "--drain-timeout", "0.2")
    finally:
        rescue.cancel()
    assert f"plant from the cache of {cached_at[:10]}" in out and "server unreachable" in out
    assert "Gateway gw-7: 1 machines, 6 sensors" in out
    assert "5 batches still queued" in out
    assert queue_depth(path) == 5

    server.start()
    out, _ = run(*options, "--duration", "0.2")
    assert "delivered 7 frames" in out and "0 batches still queued" in out
    assert list(server.stored) == [f"gw-7:{n:06d}" for n in range(1, 10)]
    assert len(server.sent_batch_ids) == 9  # each batch sent once, none lost
    assert json.loads((tmp_path / "q.plant.json").read_text())["saved_at"] > cached_at


def test_it_stops_on_a_refused_token_even_with_a_cached_plant(server, token, tmp_path):
    PlantCache(tmp_path / "q.plant.json", token).save(server.plant)
    server.token_refused = True
    with pytest.raises(CommandError, match="refused the gateway token"):
        run(
            *("--token", token, "--server", server.url),
            *("--queue", str(tmp_path / "q.sqlite3"), "--duration", "0"),
        )
    assert not server.requests


def test_it_takes_the_token_from_the_environment(server, token, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETOPS_GATEWAY_TOKEN", token)
    from apps.edge.management.commands.run_gateway import Command

    parser = Command().create_parser("manage.py", "run_gateway")
    assert parser.parse_args([]).token == token


def test_it_lists_quarantined_batches(token, tmp_path):
    queue = OfflineQueue(tmp_path / "q.sqlite3")
    batch_id = queue.enqueue("gw-7", [{"machine": "m:401"}])
    queue.quarantine(batch_id, status=413, error='{"error": "too_large"}')
    queue.close()
    out, _ = run("--show-quarantine", "--token", token, "--queue", str(tmp_path / "q.sqlite3"))
    assert "1 quarantined batches (1 frames)" in out
    assert "gw-7:000001  HTTP 413  1 frames" in out
    assert "too_large" in out


def test_it_runs_as_the_demo_gateway_with_the_token_the_server_wrote(
    server, plant, client, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    call_command("issue_demo_gateway", stdout=StringIO())
    token = (tmp_path / "edge" / "simulator.token").read_text().strip()
    server.plant = gateway_answer(client, token)
    out, _ = run(
        *("--demo", "--server", server.url, "--queue", str(tmp_path / "q.sqlite3")),
        *"--duration 0.1 --rate 10 --no-commands".split(),
    )
    assert server.headers[0]["Authorization"] == f"Bearer {token}"
    assert "Gateway simulator: 12 machines, 72 sensors" in out
    assert len(server.stored["simulator:000001"]) == 12


def test_it_asks_for_issue_demo_gateway_when_the_demo_token_is_missing(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    with pytest.raises(CommandError, match="run `manage.py issue_demo_gateway` first"):
        run("--demo", "--duration", "0")


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no token"),
        (["--machines", "m:601"], "not bound to this token: m:601"),
        (["--fault", "m:401:MELTDOWN@3"], "bad fault"),
        (["--link-offline", "soon"], "bad link window"),
        (["--server", "ftp://plant"], "must be an http"),
    ],
)
def test_it_refuses_bad_options(server, token, tmp_path, args, message):
    if args:
        args = ["--token", token, "--server", server.url, *args]
    with pytest.raises(CommandError, match=message):
        run(*args, "--queue", str(tmp_path / "q.sqlite3"), "--duration", "0")
    assert not server.requests  # nothing was sent


def test_it_stops_cleanly_on_sigterm_and_keeps_its_queue(server, tmp_path):
    """A gateway far from the server, with an empty database of its own: the
    server says what to run, then answers 503 to every batch."""
    server.plant = {"name": "gw-far", "machines": [{"code": "m:401", "sensors": []}]}
    server.answer(503, {"error": "unavailable"}, times=10_000)
    path = tmp_path / "q.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_gateway",
            "--token",
            "fo_unknown-to-this-db",
            "--server",
            server.url,
            "--queue",
            str(path),
            "--rate",
            "20",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (path.exists() and queue_depth(path) >= 3):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "SIGTERM: stopping after the current send" in out
    left = queue_depth(path)
    assert left >= 3
    assert f"{left} batches still queued" in out


def queue_depth(path) -> int:
    queue = OfflineQueue(path)
    try:
        return queue.depth()
    finally:
        queue.close()


@pytest.fixture
def telemetry_to(monkeypatch):
    """Telemetry and the plant from the fake HTTP server, commands to --server
    (the fake gateway socket)."""
    from apps.edge.management.commands import run_gateway

    def point(url):
        monkeypatch.setattr(
            run_gateway, "HttpSender", lambda _server, token: HttpSender(url, token, timeout=2)
        )
        monkeypatch.setattr(
            run_gateway, "plant_wait", lambda _server, token, **kw: plant_wait(url, token, **kw)
        )

    return point


@pytest.mark.parametrize(
    "options, expires_in, answer, target, summary",
    [
        ([], 30, ("ack", None), 2100, "1 received, 1 applied"),
        (["--command-delay", "0.2"], 30, ("ack", None), 2100, "1 received, 1 applied"),
        (["--command-delay", "0.3"], 0.1, ("nack", "expired"), None, "1 refused (1 expired)"),
        (
            ["--reject-commands"],
            30,
            ("nack", "rejected by gateway (test mode)"),
            None,
            "1 received, 0 applied, 0 duplicates acknowledged again, 1 refused",
        ),
        (["--ignore-commands"], 30, None, None, "1 ignored"),
    ],
)
def test_it_answers_commands_as_its_options_say(
    server, token, tmp_path, telemetry_to, options, expires_in, answer, target, summary
):
    telemetry_to(server.url)
    with FakeGatewayServer() as gateway:
        gateway.pending = [command("tx-1", target_speed=2100, expires_in=expires_in)]
        out, _ = run(
            *("--token", token, "--server", gateway.url, "--queue", str(tmp_path / "q.sqlite3")),
            *"--machines m:401 --rate 10 --duration 0.8 --seed 1".split(),
            *options,
        )
    assert gateway.handshakes[0]["headers"]["Authorization"] == f"Bearer {token}"
    assert f"<- ws://127.0.0.1:{gateway.port}/ws/gateway/" in out
    received = [(m["type"], m.get("reason")) for m in gateway.received]
    assert received == ([answer] if answer else [])
    targets = [f["target_speed"] for frames in server.stored.values() for f in frames]
    assert (targets[-1] == 2100) is (target == 2100)
    assert summary in out
    assert "delivered 8 frames" in out


def test_it_can_run_without_the_command_channel(server, token, tmp_path):
    with FakeGatewayServer() as gateway:
        out, _ = run(
            *("--token", token, "--server", server.url, "--queue", str(tmp_path / "q.sqlite3")),
            *"--machines m:401 --rate 10 --duration 0.3 --no-commands".split(),
        )
    assert gateway.handshakes == []
    assert "Commands: off (--no-commands)" in out
    assert "delivered 3 frames" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reject-commands", "--ignore-commands"], "not allowed with"),
        (["--no-commands", "--reject-commands"], "not allowed with"),
        (["--command-delay", "-1"], "must not be negative"),
    ],
)
def test_it_refuses_bad_command_options(token, tmp_path, args, message):
    with pytest.raises(CommandError, match=message):
        run("--token", token, *args, "--queue", str(tmp_path / "q.sqlite3"), "--duration", "0")
