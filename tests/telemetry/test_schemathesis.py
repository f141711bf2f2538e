"""Schemathesis over the served OpenAPI document, every check it has.

Each operation gets a bounded, deterministic run (positive and negative
requests, the document's examples, unsupported methods, missing auth)
through the real middleware stack in-process, as the demo plant's gateway
gw-7. A failure here is either a server bug (a 500, an HTML answer, a
status the document does not list) or a document that says something the
server does not do.
"""

from datetime import UTC, datetime

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from apps.plant.models import Sensor

from .conftest import iso

pytestmark = pytest.mark.django_db

DEVICE_API = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", DEVICE_API)
load_all_checks()
ALL_CHECKS = CHECKS.get_all()


@pytest.fixture
def in_test_transaction(plant):
    # A WSGI request ends by closing the thread's database connection,
    # which would end the test's transaction; Django's test client keeps
    # it open the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def sensor_keys(plant) -> dict[str, list[str]]:
    """Every demo machine's sensor keys, by machine code."""
    keys: dict[str, list[str]] = {}
    for code, key in Sensor.objects.order_by("pk").values_list("machine__code", "key"):
        keys.setdefault(code, []).append(key)
    return keys


def _within_the_plant(body, sensor_keys: dict[str, list[str]]) -> None:
    """Hold a schema-valid batch to the rules the document can only state
    in prose: frames name machines that exist (m:401 stands in for any
    other), readings use that machine's own sensor keys, and ts is not
    ahead of now. The rest of what was generated is sent as is."""
    if not isinstance(body, dict) or not isinstance(body.get("frames"), list):
        return
    now = datetime.now(UTC)
    for frame in body["frames"]:
        if frame.get("machine") not in sensor_keys:
            frame["machine"] = "m:401"
        known = sensor_keys[frame["machine"]]
        readings = frame.get("readings")
        if isinstance(readings, dict):
            frame["readings"] = {
                (key if key in known else known[i % len(known)]): value
                for i, (key, value) in enumerate(readings.items())
            }
        try:
            too_far = datetime.fromisoformat(frame["ts"]).astimezone(UTC) > now
        except (KeyError, TypeError, ValueError, OverflowError):
            too_far = True
        if too_far:
            frame["ts"] = iso(now)


@schema.parametrize()
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        # The plant and the token are made once per operation, not per example.
        HealthCheck.function_scoped_fixture,
    ],
)
def test_the_device_api_answers_every_generated_request_as_its_document_says(
    case, token, sensor_keys, in_test_transaction
):
    if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
        _within_the_plant(case.body, sensor_keys)
    # Every check schemathesis has, as `--checks all` would run them.
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=ALL_CHECKS)
