"""Live dashboard on the services profile (PostgreSQL + Redis channel
layer) with real daphne processes: change-to-socket latency at 200/500/1000
sockets on `line:01` while the plant streams at 1 Hz, 1000 sockets
connecting at once, bytes per delta and first-load page weight, all beside
a bare `websockets` server sending the same bytes to as many clients.

The processes have deploy/Procfile's shape: `web` daphnes hold the sockets
and serve the pages, an `ingest` daphne takes the plant stream's POSTs.

Sizes (environment, defaults sized for `make bench` on 2 cores):

  BENCH_LIVE_LINES=10, BENCH_LIVE_MACHINES_PER_LINE=10, BENCH_LIVE_SENSORS=100
  BENCH_LIVE_WORKERS=2            web daphne processes (sockets spread evenly)
  BENCH_LIVE_INGEST_WORKERS=1     ingest daphne processes for the plant stream
                                  (0: the stream posts to the web daphnes)
  BENCH_LIVE_SOCKETS=200,500,1000 socket counts (the largest also connects at once)
  BENCH_LIVE_CHANGES=60           changes measured per socket count
  BENCH_LIVE_CONNECT_TIMEOUT=60   s for all sockets to connect and get a snapshot
  BENCH_LIVE_LOAD_HZ=1            background plant stream (0 turns it off)
  BENCH_LIVE_DAPHNE_ARGS         daphne flags; unset: deploy/Procfile's `web` flags
                                  (--websocket_timeout -1 --websocket_connect_timeout 30),
                                  "" for daphne's defaults (a 5 s handshake timeout)
"""

import asyncio
import gzip
import json
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
from pathlib import Path

import websockets
from django.db import connections

from bench._support import (
    ROOT,
    daphne_servers,
    env_float,
    env_int,
    fast_hashers,
    free_port,
    percentile,
    procfile_daphne_flags,
    python_server,
    services_require,
    session_cookie_for,
)
from bench.report import Row, at_least_times, at_most, below

TOPIC = "line:01"
WAIT_DELIVERY_S = 10.0
RAMP_CONCURRENCY = 16
RAMP_LIMIT_S = 240.0
CLOSE_TIMEOUT_S = 30.0


class Sizes:
    def __init__(self):
        import os

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
        flags = os.environ.get("BENCH_LIVE_DAPHNE_ARGS")
        self.daphne_args = (
            procfile_daphne_flags("web") if flags is None else tuple(shlex.split(flags))
        )


def run() -> list[Row]:
    from bench._support import bench_database

    services_require(who="bench_live")
    sizes = Sizes()
    with bench_database():
        setup = _setup(sizes)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-django")
        try:
            processes = sizes.workers + sizes.ingest_workers
            with daphne_servers(processes, args=sizes.daphne_args) as every_url:
                urls, ingest_urls = every_url[: sizes.workers], every_url[sizes.workers :]
                rows = asyncio.run(_bench(sizes, setup, urls, ingest_urls or urls, executor))
        finally:
            executor.submit(connections.close_all).result(timeout=30)
            executor.shutdown()
            connections.close_all()
    return rows


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
                await ws.send(json.dumps({"type": "pong", "ts": round(arrived, 3)}))
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


async def _bench(
    sizes: Sizes, setup: Setup, urls: list[str], ingest_urls: list[str], executor
) -> list[Row]:
    loop = asyncio.get_running_loop()

    def sync(fn, *args):
        return loop.run_in_executor(executor, fn, *args)

    rows: list[Row] = []
    page_rows = await loop.run_in_executor(None, _page_weight, urls[0], setup.cookie)
    slug = setup.probe_code.replace(":", "")
    row_id = f"machine-row-{slug}"

    # Bytes per delta, on a quiet plant: one socket, the probe changes alone.
    snapshot_text, delta_text = await _capture_delta(urls[0], setup, row_id, sync)
    snapshot = json.loads(snapshot_text)
    delta_bytes = len(delta_text.encode())
    snapshot_bytes = len(snapshot_text.encode())
    rows.append(
        Row(
            f"delta on {TOPIC} for one changed machine (JSON text on the wire)",
            delta_bytes,
            "bytes",
            "snapshot of the line view",
            snapshot_bytes,
            below(2_000),
            higher_is_better=False,
        )
    )
    rows += page_rows

    stream = PlantStream(ingest_urls, setup, sizes.load_hz) if sizes.load_hz > 0 else None
    if stream:
        stream.start()
        await asyncio.sleep(2)
    try:
        app = await _app_side(sizes, setup, urls, row_id, sync)
    finally:
        if stream:
            await loop.run_in_executor(None, stream.finish)
    fragments = ROOT / "var" / "bench-bare-fragments.json"
    fragments.write_text(
        json.dumps(
            {
                "topic": TOPIC,
                "snapshot_html": snapshot["html"],
                "delta_html": json.loads(delta_text)["html"],
            }
        )
    )
    bare = await _bare_side(sizes, fragments)
    into = f"{sizes.ingest_workers} ingest daphne" if sizes.ingest_workers else "the same daphne"
    load = (
        f"plant streaming at {sizes.load_hz:g} Hz into {into} ({stream.sent} batches, "
        f"{stream.failed} failed)"
        if stream
        else "no background stream"
    )
    n_max = sizes.counts[-1]
    app_connect, bare_connect = app["connect"], bare["connect"]
    rows.append(
        Row(
            f"{n_max} sockets connecting at once to {sizes.workers} daphne "
            f"({' '.join(sizes.daphne_args) or 'default flags'}): all connected "
            f"and snapshotted ({_errors(app_connect[2])}; {app_connect[3]:,} deltas reached "
            f"the sockets meanwhile; {load}; for the latency figures the failed ones were "
            f"reopened {RAMP_CONCURRENCY} at a time: {app['ramp']:.0f} s)",
            app_connect[1],
            "s",
            f"bare websockets ({_errors(bare_connect[2])})",
            bare_connect[1],
            higher_is_better=False,
        )
    )
    rows.append(
        Row(
            f"{n_max} sockets connecting at once: connections refused or timed out",
            sum(app_connect[2].values()),
            "errors",
            "bare websockets",
            sum(bare_connect[2].values()),
            at_most(0),
            higher_is_better=False,
        )
    )
    for count in sorted(app["samples"]):
        a, b = app["samples"][count], bare["samples"][count]
        bare_rate = statistics.median(b.rates) if b.rates else None
        closed = app["closed"].get(count, {})
        n = f"{a.sockets}" if a.sockets == b.sockets else f"{a.sockets} ({b.sockets} bare)"
        rows += [
            Row(
                f"{n} sockets: commit+announce -> delta at socket p50 (incl. <= 1 s coalescing; "
                f"{len(a.e2e)} deliveries, {a.missing} missing, server closed: {closed or 0})",
                percentile(a.e2e, 50),
                "ms",
                "bare broadcast p50",
                percentile(b.e2e, 50),
                higher_is_better=False,
            ),
            Row(
                f"{n} sockets: commit+announce -> delta at socket p99",
                percentile(a.e2e, 99),
                "ms",
                "bare broadcast p99",
                percentile(b.e2e, 99),
                below(1_100, "1 s period + 100 ms") if count == n_max else None,
                higher_is_better=False,
            ),
            Row(
                f"{n} sockets: fan-out only (delta built -> at socket) p99",
                percentile(a.fanout, 99),
                "ms",
                "bare broadcast p99",
                percentile(b.fanout, 99),
                higher_is_better=False,
            ),
            Row(
                f"{n} sockets: delivered messages/s while fanning one delta out (median of "
                f"{len(a.rates)})",
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
        raise RuntimeError(f"could not open a socket to daphne: {dict(errors)}")
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


async def _app_side(sizes: Sizes, setup: Setup, urls: list[str], row_id: str, sync) -> dict:
    n_max = sizes.counts[-1]
    probe = Probe()
    clients, elapsed, errors = await _connect_all(
        n_max, urls, setup.cookie, sizes.connect_timeout, probe
    )
    print(
        f"  daphne: {len(clients)}/{n_max} sockets connected at once in {elapsed:.1f} s "
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
        f"  daphne: {len(clients)}/{n_max} sockets after opening {len(missing)} more, "
        f"{RAMP_CONCURRENCY} at a time, in {ramp_s:.1f} s",
        flush=True,
    )
    samples, closed = {}, {}
    marker_base = 8000

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
                f"  daphne {n} sockets: e2e p99 {percentile(s.e2e, 99):.0f} ms, "
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
