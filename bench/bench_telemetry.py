"""Telemetry pipeline on PostgreSQL: ingest service and HTTP endpoint
throughput beside a raw binary COPY, the chart query beside a raw SQL
fetch, and what the latest state weighs beside raw float64 values.

Sizes (environment, defaults sized for `make bench` on 2 cores):

  BENCH_MACHINES=1000        demo plant machines (lines of 100), BENCH_SENSORS=100 each
  BENCH_BATCH_MACHINES=100   machines per batch, BENCH_BATCH_SECONDS=10 frames per machine
  BENCH_INGEST_BATCHES=8     service batches (and as many COPY batches), BENCH_INGEST_MAX_S=60
  BENCH_HTTP_WORKERS=2       daphne processes, BENCH_HTTP_CONNECTIONS=4 keep-alive clients
  BENCH_HTTP_BATCHES=6       batches per client, BENCH_HTTP_MAX_S=90
  BENCH_HISTORY_MACHINES=5   machines given a full history, BENCH_HISTORY_HOURS=24
  BENCH_QUERIES=50           chart queries (and as many raw SQL fetches)
  BENCH_LATEST_ROUNDS=5      update rounds of the latest state after the first fill
"""

import gzip
import http.client
import itertools
import json
import random
import statistics
import threading
import time
import tracemalloc
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlparse

from django.db import connection
from django.utils import timezone

from bench._support import (
    bench_database,
    bench_database_url,
    daphne_servers,
    env_float,
    env_int,
    fast_hashers,
    percentile,
    services_require,
)
from bench.report import Row, at_least, at_least_times, below

FRAME_TYPES = ["int8", "timestamptz", "timestamptz", "varchar", "float8", "float8", "varchar"]
COPY_TABLE = "bench_copy_frames"


def _raw(text):
    """json dumps for text that is already JSON."""
    return text


class Sizes:
    def __init__(self):
        self.machines = env_int("BENCH_MACHINES", 1000)
        self.sensors = env_int("BENCH_SENSORS", 100)
        self.batch_machines = min(env_int("BENCH_BATCH_MACHINES", 100), self.machines)
        self.batch_seconds = env_int("BENCH_BATCH_SECONDS", 10)
        self.ingest_batches = env_int("BENCH_INGEST_BATCHES", 8)
        self.ingest_max_s = env_float("BENCH_INGEST_MAX_S", 60)
        self.http_workers = env_int("BENCH_HTTP_WORKERS", 2)
        self.http_connections = env_int("BENCH_HTTP_CONNECTIONS", 4)
        self.http_batches = env_int("BENCH_HTTP_BATCHES", 6)
        self.http_max_s = env_float("BENCH_HTTP_MAX_S", 90)
        self.history_machines = min(env_int("BENCH_HISTORY_MACHINES", 5), self.machines)
        self.history_hours = env_int("BENCH_HISTORY_HOURS", 24)
        self.queries = env_int("BENCH_QUERIES", 50)
        self.latest_rounds = env_int("BENCH_LATEST_ROUNDS", 5)


def run() -> list[Row]:
    services_require(who="bench_telemetry")
    sizes = Sizes()
    with bench_database():
        plant = _plant_seed(sizes)
        rows: list[Row] = []
        copy_rate, ingest_rows = _ingest_vs_copy(sizes, plant)
        rows += ingest_rows
        rows += _http_ingest(sizes, plant, copy_rate)
        rows += _chart_query(sizes, plant)
        rows += _latest_memory(sizes, plant)
        connection.close()
    return rows


# The plant and its frames
# ------------------------


class Plant:
    def __init__(self, machines, keys, lines):
        self.machines = machines  # [(id, code)] in code order
        self.keys = keys
        self.lines = lines


def _plant_seed(sizes: Sizes) -> Plant:
    from apps.plant.models import Line, Machine
    from apps.plant.services import demo_plant_seed, demo_sensor_specs

    t0 = time.perf_counter()
    per_line = min(100, sizes.machines)
    lines = -(-sizes.machines // per_line)
    with fast_hashers():
        demo_plant_seed(
            lines=lines, machines_per_line=per_line, sensors=sizes.sensors, password="bench"
        )
    machines = list(Machine.objects.order_by("line__code", "code").values_list("id", "code"))
    machines = machines[: sizes.machines]
    keys = [spec[0] for spec in demo_sensor_specs(sizes.sensors)]
    print(
        f"  seeded {len(machines)} machines x {len(keys)} sensors in {lines} lines "
        f"({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    return Plant(machines, keys, list(Line.objects.order_by("code")))


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _document(machines, keys, start: datetime, seconds: int, rng: random.Random) -> dict:
    """One gateway batch: `seconds` frames for each machine, every sensor."""
    frames = []
    for s in range(seconds):
        ts = _iso(start + timedelta(seconds=s))
        for _mid, code in machines:
            frames.append(
                {
                    "machine": code,
                    "ts": ts,
                    "status": "RUNNING",
                    "speed": 1500 + rng.randint(-20, 20),
                    "target_speed": 1500,
                    "mode": "RUN",
                    "readings": {k: rng.gauss(50.0, 5.0) for k in keys},
                }
            )
    return {"batch_id": f"bench-{uuid.uuid4().hex}", "frames": frames}


def _readings_count(document: dict) -> int:
    return sum(len(f["readings"]) for f in document["frames"])


# 1. Ingest service vs binary COPY
# --------------------------------


def _copy_rows(document: dict, ids: dict[str, int], received: datetime) -> list[tuple]:
    from psycopg.types.json import Jsonb

    return [
        (
            ids[f["machine"]],
            datetime.fromisoformat(f["ts"]),
            received,
            f["status"],
            float(f["speed"]),
            float(f["target_speed"]),
            f["mode"],
            Jsonb(f["readings"]),
        )
        for f in document["frames"]
    ]


def _copy_binary(conn, table: str, rows) -> None:
    from apps.telemetry.services import FRAME_COLUMNS

    with conn.cursor() as cur:
        with cur.copy(
            f"COPY {table} ({', '.join(FRAME_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types([*FRAME_TYPES, "jsonb"])
            for row in rows:
                copy.write_row(row)
    conn.commit()


def _ingest_vs_copy(sizes: Sizes, plant: Plant) -> tuple[float, list[Row]]:
    import psycopg

    from apps.plant.models import Machine
    from apps.plant.services import gateway_issue
    from apps.telemetry.services import telemetry_batch_ingest
    from apps.telemetry.validation import batch_validate

    machines = plant.machines[: sizes.batch_machines]
    ids = {code: mid for mid, code in machines}
    gateway, _token = gateway_issue(
        name="bench-ingest", machines=list(Machine.objects.filter(id__in=ids.values()))
    )
    with connection.cursor() as cur:
        cur.execute(
            f"""CREATE TABLE {COPY_TABLE} (
                id bigint GENERATED BY DEFAULT AS IDENTITY,
                machine_id bigint NOT NULL, ts timestamptz NOT NULL,
                received_at timestamptz NOT NULL, status varchar(32) NULL,
                speed double precision NULL, target_speed double precision NULL,
                mode varchar(16) NULL, readings jsonb NOT NULL);
            CREATE INDEX {COPY_TABLE}_machine_ts ON {COPY_TABLE} (machine_id, ts);"""
        )
    rng = random.Random(1)
    start = timezone.now() - timedelta(hours=2)
    step = timedelta(seconds=sizes.batch_seconds)
    warm = _document(machines, plant.keys, start - step, sizes.batch_seconds, rng)
    now = timezone.now()
    telemetry_batch_ingest(
        gateway=gateway, batch=batch_validate(gateway=gateway, document=warm, now=now)
    )
    service_s = copy_s = 0.0
    readings = batches = 0
    deadline = time.monotonic() + sizes.ingest_max_s
    with psycopg.connect(bench_database_url()) as conn:
        _copy_binary(conn, COPY_TABLE, _copy_rows(warm, ids, now))
        for i in range(sizes.ingest_batches):
            if time.monotonic() > deadline:
                break
            doc = _document(machines, plant.keys, start + i * step, sizes.batch_seconds, rng)
            count = _readings_count(doc)
            copy_rows = _copy_rows(doc, ids, timezone.now())
            t0 = time.perf_counter()
            now = timezone.now()
            batch = batch_validate(gateway=gateway, document=doc, now=now)
            telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=now)
            t1 = time.perf_counter()
            _copy_binary(conn, COPY_TABLE, copy_rows)
            t2 = time.perf_counter()
            service_s += t1 - t0
            copy_s += t2 - t1
            readings += count
            batches += 1
    service_rate = readings / service_s
    copy_rate = readings / copy_s
    shape = f"{sizes.batch_machines} machines x {sizes.batch_seconds} s x {sizes.sensors} sensors"
    return copy_rate, [
        Row(
            f"ingest service (batch_validate + telemetry_batch_ingest), {batches} batches of "
            f"{shape}",
            service_rate,
            "readings/s",
            "binary COPY of the same rows into a plain table",
            copy_rate,
            at_least_times(0.25, copy_rate, "COPY"),
        )
    ]


# 2. HTTP endpoint
# ----------------


def _http_ingest(sizes: Sizes, plant: Plant, copy_rate: float) -> list[Row]:
    from apps.plant.models import Machine
    from apps.plant.services import gateway_issue

    clients = max(1, min(sizes.http_connections, len(plant.machines) // sizes.batch_machines))
    rng = random.Random(2)
    start = timezone.now() - timedelta(minutes=50)
    step = timedelta(seconds=sizes.batch_seconds)
    plans = []  # (token, [warm-up bodies], [(body, readings)])
    t0 = time.perf_counter()
    for c in range(clients):
        machines = plant.machines[c * sizes.batch_machines : (c + 1) * sizes.batch_machines]
        _gw, token = gateway_issue(
            name=f"bench-http-{c}",
            machines=list(Machine.objects.filter(id__in=[mid for mid, _ in machines])),
        )
        warm = [
            _gzip(_document(machines, plant.keys, start - (w + 1) * step, 1, rng))[0]
            for w in range(sizes.http_workers)
        ]
        bodies = [
            _gzip(_document(machines, plant.keys, start + j * step, sizes.batch_seconds, rng))
            for j in range(sizes.http_batches)
        ]
        plans.append((token, warm, bodies))
    mean_gz = statistics.mean(len(b) for _t, _w, bs in plans for b, _n in bs)
    print(
        f"  built {clients * sizes.http_batches} gzip bodies (mean {mean_gz / 1e6:.2f} MB) "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    env = {
        "TELEMETRY_RATE_PER_SECOND": 1_000_000_000,
        "TELEMETRY_RATE_BURST": 1_000_000_000,
        "DB_CONN_MAX_AGE": 600,
    }
    with daphne_servers(sizes.http_workers, **env) as urls:
        # Warm-up: every client once through every worker (imports, caches).
        for token, warm, _bodies in plans:
            for url, body in zip(urls, warm, strict=True):
                status = _post(_connect(url), token, body)
                if status != 202:
                    raise RuntimeError(f"warm-up POST answered {status}; see var/bench-daphne-*")
        results = [None] * clients
        deadline = time.monotonic() + sizes.http_max_s

        def client(index: int) -> None:
            token, _warm, bodies = plans[index]
            conn = _connect(urls[index % len(urls)])
            accepted = errors = 0
            for body, count in bodies:
                if time.monotonic() > deadline:
                    break
                try:
                    status = _post(conn, token, body)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = _connect(urls[index % len(urls)])
                    status = 0
                if status == 202:
                    accepted += count
                else:
                    errors += 1
            conn.close()
            results[index] = (accepted, errors)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=sizes.http_max_s + 120)
        elapsed = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    accepted = sum(a for a, _ in done)
    errors = sum(e for _, e in done) + (clients - len(done))
    rate = accepted / elapsed
    return [
        Row(
            f"POST /api/v1/telemetry, {sizes.http_workers} daphne x {clients} keep-alive gzip "
            f"clients, batches of {sizes.batch_machines} machines x {sizes.batch_seconds} s x "
            f"{sizes.sensors} sensors ({errors} non-202)",
            rate,
            "readings/s",
            "binary COPY (above)",
            copy_rate,
            at_least(100_000),
        )
    ]


def _gzip(document: dict) -> tuple[bytes, int]:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return gzip.compress(raw, compresslevel=6, mtime=0), _readings_count(document)


def _connect(url: str) -> http.client.HTTPConnection:
    parsed = urlparse(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)


def _post(conn: http.client.HTTPConnection, token: str, body: bytes) -> int:
    conn.request(
        "POST",
        "/api/v1/telemetry",
        body=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    response = conn.getresponse()
    response.read()
    return response.status


# 3. Chart query on a full day of history
# ---------------------------------------


def _chart_query(sizes: Sizes, plant: Plant) -> list[Row]:
    import psycopg
    from psycopg.types.json import Jsonb

    from apps.plant.models import Machine
    from apps.telemetry.selectors import sensor_readings_downsampled
    from apps.telemetry.services import (
        FRAME_COLUMNS,
        _hour_floor,
        frame_partitions_ensure,
    )

    history = plant.machines[-sizes.history_machines :]
    queried_id, queried_code = history[0]
    now = timezone.now().replace(microsecond=0)
    first = now - timedelta(hours=sizes.history_hours) + timedelta(seconds=1)
    frame_partitions_ensure(start=first, end=now)
    rng = random.Random(3)
    pool = [
        Jsonb(
            json.dumps({k: rng.gauss(50.0, 5.0) for k in plant.keys}, separators=(",", ":")),
            dumps=_raw,
        )
        for _ in range(256)
    ]
    t0 = time.perf_counter()
    frames = 0
    cycle = itertools.cycle(pool)
    with psycopg.connect(bench_database_url()) as conn:
        hour = _hour_floor(first)
        while hour <= now:
            lo, hi = max(first, hour), min(now, hour + timedelta(hours=1) - timedelta(seconds=1))
            with conn.cursor() as cur:
                # Into the parent, one COPY per hourly partition: a partition
                # created with PARTITION OF does not inherit the identity
                # default of `id` on PostgreSQL < 17, so a COPY straight into
                # the partition would need the ids supplied.
                with cur.copy(
                    f"COPY telemetry_machineframe ({', '.join(FRAME_COLUMNS)}) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types([*FRAME_TYPES, "jsonb"])
                    for s in range(int((hi - lo).total_seconds()) + 1):
                        ts = lo + timedelta(seconds=s)
                        received = ts + timedelta(milliseconds=300)
                        # Interleaved by second, as the ingest writes them.
                        for mid, _code in history:
                            copy.write_row(
                                (mid, ts, received, "RUNNING", 1500.0, 1500.0, "RUN", next(cycle))
                            )
                            frames += 1
            conn.commit()
            hour += timedelta(hours=1)
        conn.execute("ANALYZE telemetry_machineframe")
        conn.commit()
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry_machineframe'::regclass"
        ).fetchone()[0]
        size = int(size or 0)
    load_s = time.perf_counter() - t0
    print(
        f"  loaded {frames:,} frames ({frames * len(plant.keys):,} readings, "
        f"{size / 1e9:.2f} GB) by binary COPY in {load_s:.0f} s",
        flush=True,
    )
    machine = Machine.objects.get(pk=queried_id)
    raw_sql = (
        "SELECT ts, readings->>'temp' FROM telemetry_machineframe "
        "WHERE machine_id = %s AND ts >= now() - interval '1 hour' ORDER BY ts"
    )
    selector_ms, raw_ms = [], []
    points = 0
    for i in range(sizes.queries + 2):
        t0 = time.perf_counter()
        points = len(sensor_readings_downsampled(machine=machine, key="temp"))
        t1 = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute(raw_sql, [queried_id])
            fetched = len(cur.fetchall())
        t2 = time.perf_counter()
        if i >= 2:  # two warm-up rounds
            selector_ms.append((t1 - t0) * 1000)
            raw_ms.append((t2 - t1) * 1000)
    label = (
        f"sensor_readings_downsampled last hour of {queried_code} temp ({points} points of "
        f"{fetched:,} rows); history: {sizes.history_hours} h x {len(history)} machines x "
        f"{len(plant.keys)} sensors at 1 Hz = {frames:,} frames / "
        f"{frames * len(plant.keys) / 1e6:.1f} M readings (history table {size / 1e9:.2f} GB)"
    )
    return [
        Row(
            f"{label}: p50",
            percentile(selector_ms, 50),
            "ms",
            "raw SQL fetch readings->>'temp' p50",
            percentile(raw_ms, 50),
            below(50),
            higher_is_better=False,
        ),
        Row(
            f"same, p99 of {len(selector_ms)}",
            percentile(selector_ms, 99),
            "ms",
            "raw SQL fetch p99",
            percentile(raw_ms, 99),
            below(50),
            higher_is_better=False,
        ),
    ]


# 4. Latest state
# ---------------


def _latest_memory(sizes: Sizes, plant: Plant) -> list[Row]:
    from apps.plant.models import Machine
    from apps.plant.services import gateway_issue
    from apps.telemetry.models import MachineLatest
    from apps.telemetry.services import telemetry_batch_ingest
    from apps.telemetry.validation import batch_validate

    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {MachineLatest._meta.db_table}")
    gateway, _token = gateway_issue(
        name="bench-latest",
        machines=list(Machine.objects.filter(id__in=[mid for mid, _ in plant.machines])),
    )
    rng = random.Random(4)
    start = timezone.now() - timedelta(minutes=10)
    count = len(plant.machines)
    raw_bytes = count * len(plant.keys) * 8

    def fill(round_: int) -> None:
        for c in range(0, count, sizes.batch_machines):
            machines = plant.machines[c : c + sizes.batch_machines]
            doc = _document(machines, plant.keys, start + timedelta(seconds=round_), 1, rng)
            now = timezone.now()
            batch = batch_validate(gateway=gateway, document=doc, now=now)
            telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=now)

    def table_size() -> int:
        with connection.cursor() as cur:
            cur.execute(f"SELECT pg_total_relation_size('{MachineLatest._meta.db_table}')")
            return cur.fetchone()[0]

    fill(0)
    first_size = table_size()
    for r in range(1, sizes.latest_rounds + 1):
        fill(r)
    after_size = table_size()

    line = plant.lines[0]
    line_machines = Machine.objects.filter(line=line).count()
    tracemalloc.start()
    rows = list(MachineLatest.objects.filter(machine__line=line))
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    readings = sum(len(r.readings) for r in rows)
    del rows
    line_raw = line_machines * len(plant.keys) * 8
    mb = 1_000_000
    return [
        Row(
            f"telemetry_machinelatest size, {count} machines x {len(plant.keys)} readings "
            "(first fill)",
            first_size / mb,
            "MB",
            "raw float64 values",
            raw_bytes / mb,
            below(100),
            higher_is_better=False,
        ),
        Row(
            f"same after {sizes.latest_rounds} more update rounds (dead rows not yet vacuumed)",
            after_size / mb,
            "MB",
            "raw float64 values",
            raw_bytes / mb,
            below(100),
            higher_is_better=False,
        ),
        Row(
            f"Python memory held by one line's latest state ({line_machines} machines, "
            f"{readings:,} readings; tracemalloc peak "
            f"{peak / mb:.1f} MB)",
            held / mb,
            "MB",
            "raw float64 values of the line",
            line_raw / mb,
            below(100),
            higher_is_better=False,
        ),
    ]
