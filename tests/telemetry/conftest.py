import gzip
import json
from datetime import UTC, datetime

import pytest

from apps.plant.services import gateway_issue
from apps.telemetry.models import MachineFrame, MachineLatest, TelemetryBatch
from apps.telemetry.services import gateway_rate_reset
from apps.telemetry.validation import sensor_keys_cache_clear

URL = "/api/v1/telemetry"


@pytest.fixture(autouse=True)
def _fresh_sensor_keys():
    # The sensor-key cache outlives a test's rolled-back transaction and
    # ids are reused on SQLite, so each test starts with it empty.
    sensor_keys_cache_clear()
    yield
    sensor_keys_cache_clear()


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def frame(machine="m:401", ts=None, **fields) -> dict:
    body = {"machine": machine, "ts": iso(ts or datetime.now(UTC))}
    body.update(fields)
    return body


def stored() -> tuple[int, int, int]:
    """(history rows, batch rows, latest rows): what an ingest stored."""
    return (
        MachineFrame.objects.count(),
        TelemetryBatch.objects.count(),
        MachineLatest.objects.count(),
    )


@pytest.fixture
def line01(plant):
    return [plant.machines[c] for c in ("m:401", "m:402", "m:403", "m:404")]


@pytest.fixture
def gateway_token(plant, line01):
    """A gateway bound to line 01's machines, and its token."""
    gateway, token = gateway_issue(name="gw-7", machines=line01)
    # Its rate bucket lives in the cache, which no rollback empties; the
    # cache is not cleared wholesale because it may be a shared Redis.
    gateway_rate_reset(gateway=gateway)
    return gateway, token


@pytest.fixture
def token(gateway_token):
    return gateway_token[1]


@pytest.fixture
def send(client, token):
    """POST a batch as the gateway: a dict is sent as JSON, bytes as is."""

    def post(body, *, auth=None, encoding=None, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        extra = {"HTTP_AUTHORIZATION": auth if auth is not None else f"Bearer {token}"}
        if encoding:
            extra["HTTP_CONTENT_ENCODING"] = encoding
        return client.post(URL, data=data, content_type=content_type, **extra)

    return post


def gzipped(body: dict) -> bytes:
    return gzip.compress(json.dumps(body).encode())
