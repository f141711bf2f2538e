"""Shared plumbing of the benchmarks: the services check, the dedicated
database each benchmark creates and drops, ASGI server processes (daphne,
or uvicorn and granian for the live bench's comparison) serving it,
sizes from the environment, percentiles and session cookies.

Nothing here touches the `fleetops` or `test_*` databases: every benchmark
runs in `BENCH_DATABASE_NAME` (default `fleetops_bench`), created from the
`postgres` maintenance database and dropped afterwards.
"""

import os
import shlex
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.db import connections

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHANNEL_PREFIX = "fleetops-bench"
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class BenchUnavailable(SystemExit):
    """A service the benchmark needs is missing; the message says which."""


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise BenchUnavailable(f"{name} must be an integer") from None


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise BenchUnavailable(f"{name} must be a number") from None


def percentile(values, p: float) -> float:
    """Nearest-rank percentile (p in 0-100); nan for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, min(len(data), int(-(-p * len(data) // 100))))
    return data[rank - 1]


# Services
# --------


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        raise BenchUnavailable(
            "The benchmarks need PostgreSQL and Redis: run `make bench`, or set "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/fleetops and "
            "REDIS_URL=redis://127.0.0.1:6379/14 (got DATABASE_URL="
            f"{url or 'unset'})."
        )
    return url


def services_require(*, who: str) -> None:
    """Fail with a clear message when PostgreSQL or Redis does not answer."""
    import psycopg
    import redis

    url = _database_url()
    parsed = urlparse(url)
    try:
        psycopg.connect(_admin_conninfo(), connect_timeout=3).close()
    except Exception as exc:
        raise BenchUnavailable(
            f"{who}: PostgreSQL at {parsed.hostname}:{parsed.port or 5432} is unreachable "
            f"({exc}). Start it (`make services`) or fix DATABASE_URL."
        ) from None
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        raise BenchUnavailable(f"{who}: REDIS_URL is not set; the benchmarks need Redis.")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        raise BenchUnavailable(
            f"{who}: Redis at {redis_url} is unreachable ({exc}). "
            "Start it (`make services`) or fix REDIS_URL."
        ) from None


def _admin_conninfo(dbname: str = "postgres") -> str:
    parsed = urlparse(_database_url())
    return parsed._replace(path="/" + dbname).geturl()


def bench_database_name() -> str:
    name = os.environ.get("BENCH_DATABASE_NAME", "fleetops_bench")
    if (
        not name.replace("_", "").isalnum()
        or "bench" not in name
        or name.startswith("test_")
        or name in ("fleetops", "postgres", "template0", "template1")
    ):
        raise BenchUnavailable(
            f"BENCH_DATABASE_NAME={name!r}: the benchmark database is created and dropped, "
            "so its name must contain 'bench' and not be fleetops or test_*."
        )
    return name


def bench_database_url() -> str:
    return _admin_conninfo(bench_database_name())


@contextmanager
def bench_database():
    """Create the dedicated database, migrate it, point Django (and the
    channel layer / cache prefixes) at it; drop it on the way out."""
    import psycopg
    from channels.layers import channel_layers
    from django.core.management import call_command

    name = bench_database_name()
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    default = settings.DATABASES["default"]
    old_name = default["NAME"]
    old_layers = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix")
    connections.close_all()
    default["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    if "CONFIG" in settings.CHANNEL_LAYERS["default"]:
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = CHANNEL_PREFIX
    settings.CACHES["default"]["KEY_PREFIX"] = CHANNEL_PREFIX
    channel_layers.backends.clear()
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield bench_database_url()
    finally:
        connections.close_all()
        default["NAME"] = old_name
        connections["default"].settings_dict["NAME"] = old_name
        if old_layers is not None:
            settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = old_layers
        channel_layers.backends.clear()
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fast_hashers():
    """Seeding creates demo users; PBKDF2 would cost seconds of CPU."""
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=FAST_HASHERS):
        yield


# Processes
# ---------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(
    port: int, proc: subprocess.Popen, timeout: float, server: str = "daphne"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{server} on port {port} exited with {proc.returncode}; "
                f"see var/bench-{server}-{port}.log"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{server}: nothing listening on {port} after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    from tests.support.processes import stop

    stop(proc)


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=bench_database_url(),
        DJANGO_SETTINGS_MODULE="fleetops.settings",
        CHANNEL_PREFIX=CHANNEL_PREFIX,
        PASSWORD_HASHERS=",".join(FAST_HASHERS),
        LOG_LEVEL="WARNING",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


APPLICATION = "fleetops.asgi:application"
# The ASGI servers a bench can start, and the flags that put one on a host
# and port (the bench picks both; the Procfile's own are dropped).
ASGI_SERVERS = ("daphne", "uvicorn", "granian")
_PLACEMENT_FLAGS = {"--bind", "-b", "--port", "-p", "--host", "-e", "--endpoint", "--backlog"}
# Pending connections each server's listening socket holds by default: a
# storm of connects past it has SYNs dropped and retried 1, 3, 7 s later.
DEFAULT_BACKLOG = {"daphne": 50, "uvicorn": 2048, "granian": 1024}


def procfile_server_flags(process: str) -> tuple[str, tuple[str, ...], int | None]:
    """The ASGI server deploy/Procfile runs `process` with, its flags and
    its listen backlog (None: the server's default), less the flags that
    say where it listens (the bench picks that) and --proxy-headers (no
    proxy here), so a bench measures the processes as production runs
    them."""
    for line in (ROOT / "deploy" / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name == process:
            break
    else:
        raise BenchUnavailable(f"deploy/Procfile has no {process!r} process")
    words = shlex.split(command)
    if not words or words[0] not in ASGI_SERVERS:
        raise BenchUnavailable(
            f"deploy/Procfile's {process!r} process is none of {', '.join(ASGI_SERVERS)}"
        )
    flags, backlog, at = [], None, 1
    while at < len(words) - 1:  # the last word is the application
        word = words[at]
        if word in _PLACEMENT_FLAGS:
            backlog = _backlog_of(word, words[at + 1]) or backlog
            at += 2
            continue
        if word != "--proxy-headers":
            flags.append(word)
        at += 1
    return words[0], tuple(flags), backlog


def _backlog_of(flag: str, value: str) -> int | None:
    # daphne's `-e tcp:port=...:backlog=N` endpoint; uvicorn's and granian's --backlog.
    if flag == "--backlog":
        return int(value)
    if flag in ("-e", "--endpoint"):
        for part in value.split(":"):
            if part.startswith("backlog="):
                return int(part.removeprefix("backlog="))
    return None


def server_installed(server: str) -> bool:
    return (BIN / server).exists()


def _server_command(
    server: str, port: int, args: tuple[str, ...], backlog: int | None = None
) -> list[str]:
    if server == "daphne":
        where = ["-b", "127.0.0.1", "-p", str(port)]
        if backlog is not None:  # Twisted's endpoint string is the only way to set it
            where = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"]
    elif server in ("uvicorn", "granian"):
        where = ["--host", "127.0.0.1", "--port", str(port)]
        if backlog is not None:
            where += ["--backlog", str(backlog)]
    else:
        raise BenchUnavailable(f"unknown ASGI server {server!r} (one of {ASGI_SERVERS})")
    if not server_installed(server):
        raise BenchUnavailable(f"{server} is not installed: `pip install -e '.[bench]'`")
    return [str(BIN / server), *where, *args, APPLICATION]


@contextmanager
def asgi_servers(
    count: int,
    *,
    server: str = "daphne",
    args: tuple[str, ...] = (),
    backlog: int | None = None,
    **env,
):
    """`count` processes of `server` (daphne, uvicorn or granian) on free
    ports serving the bench database, each listening with `backlog` (None:
    the server's default); yields their base URLs. Logs go to
    var/bench-<server>-<port>.log."""
    (ROOT / "var").mkdir(exist_ok=True)
    procs: list[tuple[subprocess.Popen, object]] = []
    urls = []
    try:
        for _ in range(count):
            port = free_port()
            log = open(ROOT / "var" / f"bench-{server}-{port}.log", "w")
            proc = subprocess.Popen(
                _server_command(server, port, args, backlog),
                cwd=ROOT,
                env=child_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append((proc, log))
            urls.append((port, proc))
        for port, proc in urls:
            _wait_for_port(port, proc, timeout=60, server=server)
        yield [f"http://127.0.0.1:{port}" for port, _ in urls]
    finally:
        for proc, log in procs:
            _stop(proc)
            log.close()


def daphne_servers(count: int, *, args: tuple[str, ...] = (), **env):
    """`count` daphne processes (see asgi_servers)."""
    return asgi_servers(count, server="daphne", args=args, **env)


@contextmanager
def python_server(module: str, *args: str, port: int):
    """Run `python -m module args...` (a bench-only server) until the block ends."""
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / f"bench-{module.rsplit('.', 1)[-1]}-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc, timeout=30, server=module)
        yield proc
    finally:
        _stop(proc)
        log.close()


# Auth
# ----


def session_cookie_for(user) -> str:
    """A Cookie header value logging `user` in, as a browser would send it."""
    from tests.support.sessions import session_cookie_for as cookie_for

    return cookie_for(user)
