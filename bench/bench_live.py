"""Live dashboard on the services profile (PostgreSQL + Redis channel
layer) with real ASGI server processes: change-to-socket latency at
200/500/1000 sockets on `line:01` while the plant streams at 1 Hz, 1000
sockets connecting at once, bytes per delta and first-load page weight, all
beside a bare `websockets` server sending the same bytes to as many clients.

The processes have deploy/Procfile's shape: `web` processes hold the
sockets and serve the pages, an `ingest` process takes the plant stream's
POSTs. The same application (fleetops.asgi:application) is measured under
each server of BENCH_LIVE_SERVERS in turn, on the same plant, sockets and
changes, and every server's figures stand beside the one bare run.

Sizes (environment, defaults sized for `make bench` on 2 cores):

  BENCH_LIVE_LINES=10, BENCH_LIVE_MACHINES_PER_LINE=10, BENCH_LIVE_SENSORS=100
  BENCH_LIVE_SERVERS              ASGI servers for the `web` processes, in order;
                                  unset: the Procfile's, then the other installed
                                  ones of daphne, uvicorn, granian
  BENCH_LIVE_WORKERS=2            web processes per server (sockets spread evenly)
  BENCH_LIVE_INGEST_WORKERS=1     ingest processes for the plant stream, as the
                                  Procfile's `ingest` (0: the stream posts to web)
  BENCH_LIVE_SOCKETS=200,500,1000 socket counts (the largest also connects at once)
  BENCH_LIVE_CHANGES=60           changes measured per socket count
  BENCH_LIVE_CONNECT_TIMEOUT=60   s for all sockets to connect and get a snapshot
  BENCH_LIVE_LOAD_HZ=1            background plant stream (0 turns it off)
  BENCH_LIVE_BUSY=0               cores kept busy by a spinning process while the
                                  servers and the bare baseline are measured (the
                                  "busy" mode: 1 on a 2-core machine)
  BENCH_LIVE_DAPHNE_ARGS          daphne flags; unset: deploy/Procfile's `web` flags
                                  (--websocket_timeout -1 --websocket_connect_timeout 30),
                                  "" for daphne's defaults (a 5 s handshake timeout)
  BENCH_LIVE_UVICORN_ARGS, BENCH_LIVE_GRANIAN_ARGS
                                  the same for the others; unset: the Procfile's
                                  when it runs that server, else EQUIVALENT_FLAGS
  BENCH_LIVE_BACKLOG              listen backlog of every web process; unset: the
                                  Procfile's (daphne: `-e tcp:...:backlog=N`) for
                                  its server, each server's default for the others
                                  (Twisted's 50 for daphne: a connect storm past it
                                  has its SYNs dropped and retried seconds later)
"""

import asyncio
import gzip
import json
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import websockets
from django.db import connections

from bench._support import (
    ASGI_SERVERS,
    DEFAULT_BACKLOG,
    ROOT,
    asgi_servers,
    env_float,
    env_int,
    fast_hashers,
    free_port,
    percentile,
    procfile_server_flags,
    python_server,
    server_installed,
    services_require,
    session_cookie_for,
)
from bench.report import Row, at_least_times, at_most, at_most_times, below

TOPIC = "line:01"
WAIT_DELIVERY_S = 10.0
RAMP_CONCURRENCY = 16
RAMP_LIMIT_S = 240.0
CLOSE_TIMEOUT_S = 30.0
# Each server's changes set the probe's speed from its own base, so no
# server's first change repeats a value the last one left in the database.
MARKER_BASE, MARKER_STRIDE = 8000, 2000

# Flags that make a server other than the Procfile's behave as its `web`
# daphne does: WebSockets through the `websockets` library (uvicorn), a
# protocol ping every 20 s with 30 s to answer (daphne's defaults; granian
# sends none), no per-message deflate (daphne offers none), no lifespan
# events (Django's ASGI handler has none), no access log, and one process
# per web slot (granian's --workers 1), as the Procfile runs daphne.
EQUIVALENT_FLAGS = {
    "daphne": ("--websocket_timeout", "-1", "--websocket_connect_timeout", "30"),
    "uvicorn": (
        "--ws", "websockets", "--ws-ping-interval", "20", "--ws-ping-timeout", "30",
        "--ws-per-message-deflate", "false", "--lifespan", "off", "--no-access-log",
        "--log-level", "warning",
    ),
    "granian": (
        "--interface", "asginl", "--workers", "1", "--ws", "--no-access-log",
        "--log-level", "warning",
    ),
}  # fmt: skip


class Sizes:
    def __init__(self):
        self.lines = env_int("BENCH_LIVE_LINES", 10)
        self.per_line = env_int("BENCH_LIVE_MACHINES_PER_LINE", 10)
        self.sensors = env_int("BENCH_LIVE_SENSORS", 100)
        self.workers = env_int("BENCH_LIVE_WORKERS", 2)
        self.ingest_workers = env_int("BENCH_LIVE_INGEST_WORKERS", 1)
        counts = os.environ.get("BENCH_LIVE_SOCKETS", "200,500,1000")
        self.counts = sorted({int(c) for c in counts.split(",") if c.strip()})
        self.changes = env_int("BENCH_LIVE_CHANGES", 60)
        self.connect_timeout = env_float("BENCH_LIVE_CONNECT_TIMEOUT", 60)
        self.load_hz = env_float("BENCH_LIVE_LOAD_HZ", 1)
        self.busy = env_int("BENCH_LIVE_BUSY", 0)
        web_server, web_flags, web_backlog = procfile_server_flags("web")
        self.ingest_server, self.ingest_args, self.ingest_backlog = procfile_server_flags("ingest")
        backlog = os.environ.get("BENCH_LIVE_BACKLOG")
        chosen = os.environ.get("BENCH_LIVE_SERVERS")
        if chosen is None:
            others = [s for s in ASGI_SERVERS if s != web_server and server_installed(s)]
            self.servers = [web_server, *others]
        else:
            self.servers = [s.strip() for s in chosen.split(",") if s.strip()]
        self.server_args, self.backlogs = {}, {}
        for server in self.servers:
            if backlog is not None:
                self.backlogs[server] = int(backlog) if backlog.strip() else None
            else:
                self.backlogs[server] = web_backlog if server == web_server else None
            flags = os.environ.get(f"BENCH_LIVE_{server.upper()}_ARGS")
            if flags is not None:
                self.server_args[server] = tuple(shlex.split(flags))
            elif server == web_server:
                self.server_args[server] = web_flags
            else:
                self.server_args[server] = EQUIVALENT_FLAGS.get(server, ())


def run() -> list[Row]:
    from bench._support import bench_database

    services_require(who="bench_live")
    sizes = Sizes()
    with bench_database():
        setup = _setup(sizes)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-django")
        try:
            rows = asyncio.run(_bench(sizes, setup, executor))
        finally:
            executor.submit(connections.close_all).result(timeout=30)
            executor.shutdown()
            connections.close_all()
    return rows


@contextmanager
def _busy_cores(cores: int):
    """The busy mode: `cores` processes spinning in pure Python, as another
    program on the machine would, until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


# Setup
# -----


class Setup:
    cookie: str
    probe_id: int
    probe_code: str
    stream_codes: list[str]
    keys: list[str]
    token: str


def _setup(sizes: Sizes) -> Setup:
    from django.contrib.auth import get_user_model

    from apps.plant.models import Machine
    from apps.plant.services import demo_plant_seed, demo_sensor_specs, gateway_issue

    with fast_hashers():
        demo_plant_seed(
            lines=sizes.lines,
            machines_per_line=sizes.per_line,
            sensors=sizes.sensors,
            password="bench",
        )
    setup = Setup()
    setup.cookie = session_cookie_for(get_user_model().objects.get(username="operator1"))
    machines = list(Machine.objects.select_related("line").order_by("line__code", "code"))
    probe = next(m for m in machines if m.line.code == TOPIC.split(":")[1])
    setup.probe_id, setup.probe_code = probe.pk, probe.code
    streamed = [m for m in machines if m.pk != probe.pk]
    setup.stream_codes = [m.code for m in streamed]
    setup.keys = [spec[0] for spec in demo_sensor_specs(sizes.sensors)]
    _gw, setup.token = gateway_issue(name="bench-live-stream", machines=streamed)
    print(
        f"  plant: {len(machines)} machines x {sizes.sensors} sensors in {sizes.lines} lines; "
        f"probe {probe.code} on {TOPIC}",
        flush=True,
    )
    return setup


def _probe_change(probe_id: int, speed: int) -> float:
    """Commit a new speed for the probe machine and announce it; returns
    the wall-clock time of the commit (the start of the latency)."""
    from apps.live.push import machines_changed
    from apps.plant.models import Machine

    Machine.objects.filter(pk=probe_id).update(speed=speed)
    committed = time.time()
    machines_changed([probe_id])
    return committed


# Background plant stream
# -----------------------


class PlantStream:
    """The background stream (bench/_plant_stream.py) in its own process,
    so building its batches never competes with the measuring client."""

    def __init__(self, urls: list[str], setup: Setup, hz: float):
        self.config = {
            "urls": urls,
            "token": setup.token,
            "codes": setup.stream_codes,
            "keys": setup.keys,
            "hz": hz,
        }
        self.proc: subprocess.Popen | None = None
        self.sent = self.failed = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._plant_stream"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.proc.stdin.write(json.dumps(self.config) + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        """Stop the stream (closing its stdin) and read its counts."""
        try:
            out, _err = self.proc.communicate(timeout=15)
            self.sent, self.failed = (int(n) for n in out.split())
        except (subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
            raise


# Sockets
# -------


class Probe:
    """What the readers look for: every substring of `match` in a message."""

    def __init__(self):
        self.match: tuple[str, ...] | None = None
        self.arrivals: dict[int, tuple[float, float]] = {}  # client -> (arrived, envelope ts)
        self.expected = 0
        self.text = ""
        self.done = asyncio.Event()

    def arm(self, match: tuple[str, ...], expected: int) -> None:
        self.arrivals = {}
        self.expected = expected
        self.done = asyncio.Event()
        self.match = match


class Client:
    def __init__(self, index: int, ws):
        self.index, self.ws = index, ws
        self.snapshot: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.active = True
        self.messages = 0  # deltas after the snapshot
        self.closed_code: int | None = None
        self.task: asyncio.Task | None = None


async def _open(index: int, url: str, cookie: str, timeout: float, probe: Probe) -> Client:
    """Connect, subscribe and wait for the snapshot; the reader (which
    answers pings, as a browser does) runs from the moment it connects."""
    ws = await websockets.connect(
        url.replace("http", "ws", 1) + "/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": url},
        open_timeout=timeout,
        ping_interval=None,
        compression=None,
        max_size=2**24,
    )
    client = Client(index, ws)
    client.task = asyncio.create_task(_reader(client, probe))
    try:
        await ws.send(json.dumps({"type": "subscribe", "topics": [TOPIC]}))
        await asyncio.wait_for(asyncio.shield(client.snapshot), timeout)
        return client
    except BaseException:
        client.active = False
        client.task.cancel()
        await ws.close()
        raise


async def _connect_all(n: int, urls: list[str], cookie: str, timeout: float, probe: Probe):
    """Open n sockets at once, spread over urls; (clients, seconds, errors)."""
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(
            asyncio.wait_for(_open(i, urls[i % len(urls)], cookie, timeout, probe), timeout)
            for i in range(n)
        ),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - t0
    clients = [r for r in results if isinstance(r, Client)]
    errors = Counter(_error_name(r) for r in results if not isinstance(r, Client))
    return clients, elapsed, errors


async def _ramp(
    indexes: list[int], urls: list[str], cookie: str, timeout: float, probe: Probe, limit: float
):
    """Open the sockets `indexes` at most RAMP_CONCURRENCY at a time (each retried
    twice), within `limit` seconds; (clients, seconds)."""
    gate = asyncio.Semaphore(RAMP_CONCURRENCY)
    deadline = time.monotonic() + limit

    async def one(i: int) -> Client | None:
        for _attempt in range(3):
            async with gate:
                if time.monotonic() > deadline:
                    return None
                try:
                    return await asyncio.wait_for(
                        _open(i, urls[i % len(urls)], cookie, timeout, probe), timeout
                    )
                except Exception:
                    pass
            await asyncio.sleep(0.5)
        return None

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in indexes))
    return [c for c in results if c is not None], time.perf_counter() - t0


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, ConnectionError):
        return str(exc)  # "closed <code>" by the server before the snapshot
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code}"  # the handshake was refused
    return type(exc).__name__  # InvalidMessage: the server dropped the handshake


async def _reader(client: Client, probe: Probe) -> None:
    ws = client.ws
    try:
        async for text in ws:
            arrived = time.time()
            if text.startswith('{"type":"ping"'):
                # Echo the ping's ts, as the page does: it proves everything
                # sent before the ping was read (LIVE_UNREAD_LIMIT).
                await ws.send(json.dumps({"type": "pong", "ts": json.loads(text)["ts"]}))
                continue
            if not client.snapshot.done():
                if text.startswith('{"type":"snapshot"'):
                    client.snapshot.set_result(text)
                continue
            client.messages += text.startswith('{"type":"delta"')
            match = probe.match
            if (
                match is not None
                and client.active
                and client.index not in probe.arrivals
                and all(m in text for m in match)
            ):
                probe.arrivals[client.index] = (arrived, json.loads(text)["ts"])
                probe.text = text
                if len(probe.arrivals) >= probe.expected:
                    probe.done.set()
    except websockets.ConnectionClosed as exc:
        client.closed_code = exc.rcvd.code if exc.rcvd else 1006
    finally:
        client.active = False
        if not client.snapshot.done():
            client.snapshot.set_exception(ConnectionError(f"closed {client.closed_code}"))


async def _close(clients: list[Client]) -> None:
    for c in clients:
        c.active = False
    await asyncio.wait_for(
        asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True),
        CLOSE_TIMEOUT_S,
    )
    for c in clients:
        if c.task is not None:
            c.task.cancel()


class Sample:
    """Deliveries of one socket count: latencies in ms and fan-out rates."""

    def __init__(self):
        self.e2e: list[float] = []
        self.fanout: list[float] = []
        self.rates: list[float] = []
        self.missing = 0
        self.sockets = 0


async def _measure(
    *,
    clients: list[Client],
    probe: Probe,
    changes: int,
    trigger,
    match_for,
    spacing: tuple[float, float],
) -> Sample:
    sample = Sample()
    sample.sockets = sum(c.active for c in clients)
    for k in range(changes):
        live = [c for c in clients if c.active]
        probe.arm(match_for(k), expected=len(live))
        started = await trigger(k)
        try:
            await asyncio.wait_for(probe.done.wait(), WAIT_DELIVERY_S)
        except TimeoutError:
            pass
        arrivals = list(probe.arrivals.values())
        probe.match = None
        sample.missing += len(live) - len(arrivals)
        if arrivals:
            sample.e2e += [(a - started) * 1000 for a, _ts in arrivals]
            sample.fanout += [max(0.0, a - ts) * 1000 for a, ts in arrivals]
            span = max(a - ts for a, ts in arrivals)
            sample.rates.append(len(arrivals) / max(span, 1e-4))
        await asyncio.sleep(random.uniform(*spacing))
    return sample


# The benchmark
# -------------


async def _bench(sizes: Sizes, setup: Setup, executor) -> list[Row]:
    loop = asyncio.get_running_loop()

    def sync(fn, *args):
        return loop.run_in_executor(executor, fn, *args)

    slug = setup.probe_code.replace(":", "")
    row_id = f"machine-row-{slug}"
    rows: list[Row] = []
    served: dict[str, dict] = {}
    fragments = ROOT / "var" / "bench-bare-fragments.json"
    with _busy_cores(sizes.busy):
        for i, server in enumerate(sizes.servers):
            with ExitStack() as stack:
                urls = stack.enter_context(
                    asgi_servers(
                        sizes.workers,
                        server=server,
                        args=sizes.server_args[server],
                        backlog=sizes.backlogs[server],
                    )
                )
                ingest_urls = urls
                if sizes.ingest_workers:
                    ingest_urls = stack.enter_context(
                        asgi_servers(
                            sizes.ingest_workers,
                            server=sizes.ingest_server,
                            args=sizes.ingest_args,
                            backlog=sizes.ingest_backlog,
                        )
                    )
                if i == 0:
                    rows += await _page_and_delta(urls[0], setup, row_id, fragments, sync)
                served[server] = await _served_side(
                    sizes, setup, server, urls, ingest_urls, row_id, sync,
                    marker_base=MARKER_BASE + i * MARKER_STRIDE,
                )  # fmt: skip
        bare = await _bare_side(sizes, fragments)
    for server in sizes.servers:
        rows += _server_rows(sizes, server, served[server], bare)
    return rows


async def _page_and_delta(url: str, setup: Setup, row_id: str, fragments: Path, sync):
    """Page weight and bytes per delta, on a quiet plant (one socket, the
    probe changes alone); writes the bare server's fragments."""
    loop = asyncio.get_running_loop()
    page_rows = await loop.run_in_executor(None, _page_weight, url, setup.cookie)
    snapshot_text, delta_text = await _capture_delta(url, setup, row_id, sync)
    snapshot = json.loads(snapshot_text)
    fragments.write_text(
        json.dumps(
            {
                "topic": TOPIC,
                "snapshot_html": snapshot["html"],
                "delta_html": json.loads(delta_text)["html"],
            }
        )
    )
    delta_row = Row(
        f"delta on {TOPIC} for one changed machine (JSON text on the wire)",
        len(delta_text.encode()),
        "bytes",
        "snapshot of the line view",
        len(snapshot_text.encode()),
        below(2_000),
        higher_is_better=False,
    )
    return [delta_row, *page_rows]


async def _served_side(
    sizes: Sizes,
    setup: Setup,
    server: str,
    urls: list[str],
    ingest_urls: list[str],
    row_id: str,
    sync,
    *,
    marker_base: int,
) -> dict:
    """The application's side under one server, the plant streaming."""
    loop = asyncio.get_running_loop()
    stream = PlantStream(ingest_urls, setup, sizes.load_hz) if sizes.load_hz > 0 else None
    if stream:
        stream.start()
        await asyncio.sleep(2)
    try:
        app = await _app_side(sizes, setup, server, urls, row_id, sync, marker_base)
    finally:
        if stream:
            await loop.run_in_executor(None, stream.finish)
    if sizes.ingest_workers:
        into = f"{sizes.ingest_workers} ingest {sizes.ingest_server}"
    else:
        into = f"the same {server}"
    app["load"] = (
        f"plant streaming at {sizes.load_hz:g} Hz into {into} ({stream.sent} batches, "
        f"{stream.failed} failed)"
        if stream
        else "no background stream"
    )
    return app


def _server_rows(sizes: Sizes, server: str, app: dict, bare: dict) -> list[Row]:
    """One server's figures, each beside the same run's bare broadcast;
    the issue's targets apply at the largest socket count."""
    n_max = sizes.counts[-1]
    app_connect, bare_connect = app["connect"], bare["connect"]
    flags = " ".join(sizes.server_args[server]) or "default flags"
    backlog = sizes.backlogs[server] or DEFAULT_BACKLOG.get(server)
    flags += f"; listen backlog {backlog}"
    busy = f"; {sizes.busy} core(s) kept busy" if sizes.busy else ""
    rows = [
        Row(
            f"{server}: {n_max} sockets connecting at once to {sizes.workers} {server} "
            f"({flags}): all connected and snapshotted ({_errors(app_connect[2])}; "
            f"{app_connect[3]:,} deltas reached the sockets meanwhile; {app['load']}{busy}; "
            f"for the latency figures the failed ones were reopened {RAMP_CONCURRENCY} at "
            f"a time: {app['ramp']:.0f} s)",
            app_connect[1],
            "s",
            f"bare websockets ({_errors(bare_connect[2])})",
            bare_connect[1],
            at_most_times(3, bare_connect[1], "bare"),
            higher_is_better=False,
        ),
        Row(
            f"{server}: {n_max} sockets connecting at once: connections refused or timed out",
            sum(app_connect[2].values()),
            "errors",
            "bare websockets",
            sum(bare_connect[2].values()),
            at_most(0),
            higher_is_better=False,
        ),
    ]
    for count in sorted(app["samples"]):
        a, b = app["samples"][count], bare["samples"][count]
        bare_rate = statistics.median(b.rates) if b.rates else None
        bare_fanout = percentile(b.fanout, 99)
        closed = app["closed"].get(count, {})
        n = f"{a.sockets}" if a.sockets == b.sockets else f"{a.sockets} ({b.sockets} bare)"
        at_max = count == n_max
        rows += [
            Row(
                f"{server}: {n} sockets: commit+announce -> delta at socket p50 (incl. <= 1 s "
                f"coalescing; {len(a.e2e)} deliveries, {a.missing} missing, server closed: "
                f"{closed or 0})",
                percentile(a.e2e, 50),
                "ms",
                "bare broadcast p50",
                percentile(b.e2e, 50),
                higher_is_better=False,
            ),
            Row(
                f"{server}: {n} sockets: commit+announce -> delta at socket p99",
                percentile(a.e2e, 99),
                "ms",
                "bare broadcast p99",
                percentile(b.e2e, 99),
                at_most(1_100, "1 s period + 100 ms") if at_max else None,
                higher_is_better=False,
            ),
            Row(
                f"{server}: {n} sockets: fan-out only (delta built -> at socket) p99",
                percentile(a.fanout, 99),
                "ms",
                "bare broadcast p99",
                bare_fanout,
                at_most_times(2, bare_fanout, "bare") if at_max else None,
                higher_is_better=False,
            ),
            Row(
                f"{server}: {n} sockets: delivered messages/s while fanning one delta out "
                f"(median of {len(a.rates)})",
                statistics.median(a.rates) if a.rates else 0.0,
                "msg/s",
                f"bare websockets ({b.missing} missing)",
                bare_rate,
                at_least_times(0.10, bare_rate, "bare"),
            ),
        ]
    return rows


def _errors(errors: Counter) -> str:
    total = sum(errors.values())
    return f"{total} errors" + (f" {dict(errors)}" if total else "")


async def _capture_delta(url: str, setup: Setup, row_id: str, sync) -> tuple[str, str]:
    """The snapshot, and the delta a line socket receives when the probe
    alone changes (the median size of three)."""
    probe = Probe()
    (client,), _s, errors = await _connect_all(1, [url], setup.cookie, 30, probe)
    if errors:
        raise RuntimeError(f"could not open a socket to the server: {dict(errors)}")
    texts = []
    try:
        for k in range(3):
            probe.arm((row_id, f">{7100 + k}<"), expected=1)
            await sync(_probe_change, setup.probe_id, 7100 + k)
            await asyncio.wait_for(probe.done.wait(), WAIT_DELIVERY_S)
            texts.append(probe.text)
    finally:
        await _close([client])
    return client.snapshot.result(), sorted(texts, key=len)[len(texts) // 2]


async def _app_side(
    sizes: Sizes, setup: Setup, server: str, urls: list[str], row_id: str, sync, marker_base: int
) -> dict:
    n_max = sizes.counts[-1]
    probe = Probe()
    clients, elapsed, errors = await _connect_all(
        n_max, urls, setup.cookie, sizes.connect_timeout, probe
    )
    print(
        f"  {server}: {len(clients)}/{n_max} sockets connected at once in {elapsed:.1f} s "
        f"(errors {dict(errors)})",
        flush=True,
    )
    # Deltas other sockets received while the storm connected (each new
    # snapshot publishes what changed since the last rendering to the rest).
    storm_messages = sum(c.messages for c in clients)
    connect = (len(clients), elapsed, errors, storm_messages)
    await asyncio.sleep(2)
    kept = [c for c in clients if c.active]
    taken = {c.index for c in kept}
    missing = [i for i in range(n_max) if i not in taken]
    more, ramp_s = await _ramp(
        missing, urls, setup.cookie, sizes.connect_timeout, probe, RAMP_LIMIT_S
    )
    clients = kept + more
    clients = [c for c in clients if c.active]
    print(
        f"  {server}: {len(clients)}/{n_max} sockets after opening {len(missing)} more, "
        f"{RAMP_CONCURRENCY} at a time, in {ramp_s:.1f} s",
        flush=True,
    )
    samples, closed = {}, {}

    async def trigger(k):
        return await sync(_probe_change, setup.probe_id, marker_base + k)

    try:
        for n in sorted(sizes.counts, reverse=True):
            await _close(clients[n:])
            clients = clients[:n]
            await asyncio.sleep(1.5)
            samples[n] = await _measure(
                clients=clients,
                probe=probe,
                changes=sizes.changes,
                trigger=trigger,
                match_for=lambda k, base=marker_base: (row_id, f">{base + k}<"),
                spacing=(0.05, 1.0),
            )
            closed[n] = dict(Counter(c.closed_code for c in clients if c.closed_code))
            marker_base += sizes.changes
            s = samples[n]
            print(
                f"  {server} {n} sockets: e2e p99 {percentile(s.e2e, 99):.0f} ms, "
                f"missing {s.missing}, closed {closed[n]}",
                flush=True,
            )
    finally:
        await _close(clients)
    return {"connect": connect, "samples": samples, "closed": closed, "ramp": ramp_s}


async def _bare_side(sizes: Sizes, fragments: Path) -> dict:
    from contextlib import ExitStack

    ports = [free_port() for _ in range(sizes.workers)]
    with ExitStack() as stack:
        for port in ports:
            stack.enter_context(
                python_server("bench._bare_ws", str(port), str(fragments), port=port)
            )
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        controls = [
            await websockets.connect(
                f"ws://127.0.0.1:{port}/control", ping_interval=None, compression=None
            )
            for port in ports
        ]
        n_max = sizes.counts[-1]
        probe = Probe()
        clients, elapsed, errors = await _connect_all(n_max, urls, "", sizes.connect_timeout, probe)
        print(
            f"  bare: {len(clients)}/{n_max} sockets connected in {elapsed:.1f} s "
            f"(errors {dict(errors)})",
            flush=True,
        )
        seq = 0
        samples = {}

        async def trigger(k):
            started = time.time()
            for control in controls:
                await control.send(str(seq_base + k))
            return started

        try:
            for n in sorted(sizes.counts, reverse=True):
                await _close(clients[n:])
                clients = clients[:n]
                await asyncio.sleep(0.5)
                seq_base = seq + 1
                samples[n] = await _measure(
                    clients=clients,
                    probe=probe,
                    changes=sizes.changes,
                    trigger=trigger,
                    match_for=lambda k, base=seq_base: (f'"seq":{base + k},',),
                    spacing=(0.05, 0.3),
                )
                seq += sizes.changes + 1
        finally:
            await _close(clients)
            for control in controls:
                await control.close()
    return {"connect": (len(clients), elapsed, errors, 0), "samples": samples}


# Page weight
# -----------

_ASSET_RE = re.compile(
    r"""<(?:script[^>]*?\ssrc|link[^>]*?rel=["']stylesheet["'][^>]*?\shref)=["']([^"']+)["']"""
)


def _page_weight(url: str, cookie: str) -> list[Row]:
    def get(path: str) -> bytes:
        request = urllib.request.Request(url + path, headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.url.rstrip("/") != (url + path).rstrip("/"):
                raise RuntimeError(f"{path} redirected to {response.url}: the session failed")
            return response.read()

    path = f"/lines/{TOPIC.split(':')[1]}/"
    html = get(path)
    assets = sorted(set(_ASSET_RE.findall(html.decode())))
    bodies = {path: html} | {a: get(a) for a in assets}
    raw = sum(len(b) for b in bodies.values())
    zipped = sum(len(gzip.compress(b, 6)) for b in bodies.values())
    names = ", ".join(Path(a).name for a in assets)
    return [
        Row(
            f"first load of {path}: HTML + {names}, gzip -6",
            zipped / 1000,
            "KB",
            "uncompressed",
            raw / 1000,
            below(60),
            higher_is_better=False,
        )
    ]
