import os
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.edge.queue import OfflineQueue
from apps.plant.models import Gateway
from apps.plant.services import demo_sensor_specs, gateway_issue
from tests.support.processes import ROOT


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("run_gateway", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def token(plant):
    machines = [plant.machines["m:401"], plant.machines["m:402"], plant.machines["m:501"]]
    _gateway, token = gateway_issue(name="gw-7", machines=machines)
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
    assert "delivered 10 frames" in out and "0 batches still queued" in out


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


def test_it_issues_itself_a_demo_token_and_revokes_the_previous_one(server, plant, tmp_path):
    old, old_token = gateway_issue(name="simulator", machines=[plant.machines["m:401"]])
    out, _ = run(
        *("--demo", "--server", server.url, "--queue", str(tmp_path / "q.sqlite3")),
        *"--duration 0.1 --rate 10".split(),
    )
    old.refresh_from_db()
    assert old.revoked_at is not None and old.name == f"simulator-revoked-{old.pk}"
    new = Gateway.objects.get(name="simulator")
    assert new.is_active and new.machines.count() == 12
    sent = server.headers[0]["Authorization"].removeprefix("Bearer ")
    assert sent != old_token and Gateway.hash_token(sent) == new.token_hash
    assert "Gateway simulator: 12 machines, 72 sensors" in out
    assert len(server.stored["simulator:000001"]) == 12


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
def test_it_refuses_bad_options(token, tmp_path, args, message):
    if args:
        args = ["--token", token, *args]
    with pytest.raises(CommandError, match=message):
        run(*args, "--queue", str(tmp_path / "q.sqlite3"), "--duration", "0")


def test_it_stops_cleanly_on_sigterm_and_keeps_its_queue(down_url, tmp_path):
    """A gateway far from the server: its database knows nothing, --machines says what to run."""
    path = tmp_path / "q.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_gateway",
            "--token",
            "fo_unknown-to-this-db",
            "--machines",
            "m:401",
            "--server",
            down_url,
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
