import threading

import pytest
from django.db import connections
from django.test import Client

from apps.telemetry.models import MachineFrame, TelemetryBatch

from .conftest import URL, frame


@pytest.mark.django_db(transaction=True)
def test_it_stores_two_identical_concurrent_batches_once(plant, token):
    body = {
        "batch_id": "race-1",
        "frames": [frame(m, readings={"temp": 50.0}) for m in ("m:401", "m:402", "m:403")],
    }
    barrier = threading.Barrier(4)
    answers, errors = [], []

    def post():
        try:
            barrier.wait(timeout=10)
            response = Client().post(
                URL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
            )
            answers.append((response.status_code, response.json()))
        except Exception as exc:  # surfaced below, threads swallow them
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(answers, key=lambda a: a[1]["duplicate"]) == [
        (202, {"accepted": 3, "duplicate": False}),
        (202, {"accepted": 3, "duplicate": True}),
        (202, {"accepted": 3, "duplicate": True}),
        (202, {"accepted": 3, "duplicate": True}),
    ]
    assert TelemetryBatch.objects.count() == 1
    assert MachineFrame.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_it_ingests_overlapping_batches_concurrently_without_deadlock(plant, token):
    codes = ["m:401", "m:402", "m:403", "m:404"]
    bodies = [
        {
            "batch_id": f"overlap-{i}",
            "frames": [frame(c, readings={"temp": float(i)}) for c in order],
        }
        for i, order in enumerate([codes, codes[::-1], codes[1:] + codes[:1], codes[::-1]])
    ]
    barrier = threading.Barrier(len(bodies))
    answers, errors = [], []

    def post(body):
        try:
            barrier.wait(timeout=10)
            response = Client().post(
                URL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
            )
            answers.append(response.status_code)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert answers == [202] * 4
    assert TelemetryBatch.objects.count() == 4
    assert MachineFrame.objects.count() == 16
