"""The ingest's cost against the floor: a raw binary COPY of the same rows.

Target: the service path (validation of the parsed JSON + ingest) moves at
least a quarter of the rows per second that a bare binary COPY does.
PostgreSQL only: the comparison is with COPY.
"""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from psycopg.types.json import Jsonb

from apps.plant.models import Sensor
from apps.telemetry.models import MachineFrame
from apps.telemetry.services import frame_partitions_ensure, telemetry_batch_ingest
from apps.telemetry.validation import batch_validate

from .conftest import iso

pytestmark = [pytest.mark.services, pytest.mark.django_db]

SENSORS = 100
SECONDS = 250


def _best_of(runs, fn):
    best = float("inf")
    for i in range(runs):
        best = min(best, fn(i))
    return best


@pytest.mark.skipif(connection.vendor != "postgresql", reason="compares with PostgreSQL COPY")
def test_it_ingests_at_least_a_quarter_as_fast_as_raw_binary_copy(gateway_token, line01):
    gateway, _ = gateway_token
    keys = [f"s{i:03d}" for i in range(SENSORS)]
    Sensor.objects.bulk_create([Sensor(machine=m, key=k, label=k) for m in line01 for k in keys])
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(seconds=SECONDS)
    frame_partitions_ensure(start=start - timedelta(hours=1), end=now)
    frames = [
        {
            "machine": m.code,
            "ts": iso(start + timedelta(seconds=s)),
            "status": "RUNNING",
            "speed": 1500.0 + s,
            "target_speed": 1500,
            "mode": "RUN",
            "readings": {k: 50.0 + i + s / 1000 for i, k in enumerate(keys)},
        }
        for s in range(SECONDS)
        for m in line01
    ]
    rows = [
        (
            m.pk,
            start + timedelta(seconds=s),
            now,
            "RUNNING",
            1500.0 + s,
            1500.0,
            "RUN",
            Jsonb({k: 50.0 + i + s / 1000 for i, k in enumerate(keys)}),
        )
        for s in range(SECONDS)
        for m in line01
    ]

    def raw_copy(_):
        began = time.perf_counter()
        with connection.cursor() as cursor:
            with cursor.cursor.copy(
                "COPY telemetry_machineframe (machine_id, ts, received_at, status, speed, "
                "target_speed, mode, readings) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(
                    [
                        "int8",
                        "timestamptz",
                        "timestamptz",
                        "varchar",
                        "float8",
                        "float8",
                        "varchar",
                        "jsonb",
                    ]
                )
                for row in rows:
                    copy.write_row(row)
        return time.perf_counter() - began

    def service(i):
        document = {"batch_id": f"bench-{i}", "frames": frames}
        began = time.perf_counter()
        batch = batch_validate(gateway=gateway, document=document, now=now)
        telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=now)
        return time.perf_counter() - began

    copy_s = _best_of(3, raw_copy)
    service_s = _best_of(3, service)
    assert MachineFrame.objects.count() == 6 * len(rows)
    print(
        f"\n{len(rows)} frames x {SENSORS} readings: raw binary COPY {copy_s * 1000:.0f} ms, "
        f"service {service_s * 1000:.0f} ms ({copy_s / service_s:.2f} of COPY)"
    )
    assert service_s <= 4 * copy_s
