"""Real server processes for the tests: daphne and a Celery worker, started
against the test database and the profile's channel layer and broker."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.db import connections

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_url() -> str:
    """DATABASE_URL of the database the tests are using right now."""
    settings = connections["default"].settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    parsed = urlparse(os.environ["DATABASE_URL"])
    return parsed._replace(path="/" + settings["NAME"]).geturl()


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env["DJANGO_SETTINGS_MODULE"] = "fleetops.settings"
    env["PASSWORD_HASHERS"] = ",".join(settings.PASSWORD_HASHERS)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _process(args: list[str], log_path: Path, env: dict):
    """A child process of the project, its output in `log_path`, stopped
    (TERM, then KILL) when the block ends."""
    log = open(log_path, "w")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=child_env(**env), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        stop(proc)
        log.close()


@contextmanager
def daphne_server(port: int | None = None, **env):
    port = port or free_port()
    args = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "fleetops.asgi:application"]
    with _process(args, ROOT / "var" / f"daphne-{port}.log", env) as proc:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}", proc


@contextmanager
def celery_worker(*, purge: bool = True, **env):
    # Tasks queued by earlier tests (whose rows are gone) must not run here,
    # unless the test queued its own work before starting the worker.
    if purge:
        subprocess.run(
            [str(BIN / "celery"), "-A", "fleetops", "purge", "-f"],
            cwd=ROOT,
            env=child_env(**env),
            capture_output=True,
            check=True,
            timeout=60,
        )
    args = [str(BIN / "celery"), "-A", "fleetops", "worker", "--pool", "solo"]
    args += ["--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    with _process(args, ROOT / "var" / "celery-worker.log", env) as proc:
        yield proc


@contextmanager
def celery_beat(workdir: Path, **env):
    """A real beat process, its schedule file and log under `workdir`."""
    args = [str(BIN / "celery"), "-A", "fleetops", "beat", "--schedule", str(workdir / "schedule")]
    with _process(args, workdir / "celery-beat.log", env) as proc:
        yield proc
