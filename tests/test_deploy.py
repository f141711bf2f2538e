"""deploy/Procfile stays runnable: every process starts on the real services."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import BIN, ROOT, child_env, free_port, stop

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "deploy" / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def test_the_procfile_names_the_production_processes():
    assert {"release", "web", "ingest", "worker", "beat"} <= set(procfile())


def test_every_procfile_process_starts_on_the_real_services(tmp_path: Path):
    port, ingest_port = free_port(), free_port()
    env = child_env(
        PORT=port,
        INGEST_PORT=ingest_port,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        SECRET_KEY="deploy-test-" + "x" * 40,
        STATIC_MANIFEST="true",
        STATIC_ROOT=tmp_path / "static",
        VAR_DIR=tmp_path,
    )
    commands = procfile()
    release = subprocess.run(
        ["bash", "-c", commands.pop("release")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert release.returncode == 0, release.stderr[-2000:]
    assert (tmp_path / "static" / "staticfiles.json").exists()

    procs = {}
    try:
        for name, command in commands.items():
            log = open(tmp_path / f"{name}.log", "w")
            procs[name] = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for serving in (port, ingest_port):
            health = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and health is None:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{serving}/healthz", timeout=5
                    ) as r:
                        health = json.load(r)
                except OSError:
                    time.sleep(0.3)
            assert health and health["ok"], (serving, health)
        # The ingest process answers the gateways' endpoint (a token is required).
        request = urllib.request.Request(
            f"http://127.0.0.1:{ingest_port}/api/v1/telemetry", data=b"{}", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        time.sleep(3)  # the worker and beat must still be up after connecting
        for name, proc in procs.items():
            assert proc.poll() is None, (name, (tmp_path / f"{name}.log").read_text()[-2000:])
        # A page that uses static files must resolve them through the manifest.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5) as r:
            assert "/static/css/fleetops." in r.read().decode()
    finally:
        for proc in procs.values():
            stop(proc)
