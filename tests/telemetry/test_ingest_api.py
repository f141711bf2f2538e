import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest

from apps.plant.services import gateway_issue, gateway_revoke
from apps.telemetry.models import MachineFrame, MachineLatest, TelemetryBatch

from .conftest import URL, frame, gzipped, iso, stored

pytestmark = pytest.mark.django_db


def test_it_accepts_a_batch_with_202_and_exact_shape(send, plant):
    now = datetime.now(UTC)
    body = {
        "batch_id": "gw-7:000123",
        "frames": [
            frame(
                "m:401",
                now,
                status="RUNNING",
                speed=1480,
                target_speed=1500,
                mode="RUN",
                readings={"temp": 88.5, "vibration_01": 0.12},
            ),
            frame("m:402", now, readings={"temp": 60}),
            frame("m:401", now + timedelta(seconds=1), readings={"temp": 89.0}),
        ],
    }
    response = send(body)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 3, "duplicate": False}
    assert stored() == (3, 1, 2)
    row = MachineFrame.objects.filter(machine=plant.machines["m:401"]).order_by("ts").first()
    assert row.readings == {"temp": 88.5, "vibration_01": 0.12}
    assert (row.status, row.speed, row.target_speed, row.mode) == ("RUNNING", 1480, 1500, "RUN")
    assert abs((row.received_at - now).total_seconds()) < 60
    machine = plant.machines["m:401"]
    machine.refresh_from_db()
    assert (machine.status_id, machine.speed, machine.target_speed, machine.mode) == (
        "RUNNING",
        1480,
        1500,
        "RUN",
    )
    assert machine.last_seen_at is not None


def test_it_accepts_gzip(send):
    body = {"batch_id": "b-gz", "frames": [frame(readings={"temp": 70.0})]}
    response = send(gzipped(body), encoding="gzip")
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1, "duplicate": False}
    assert MachineFrame.objects.get().readings == {"temp": 70.0}


def test_it_stores_a_duplicate_batch_once(send):
    body = {"batch_id": "b-dup", "frames": [frame(readings={"temp": 70.0})]}
    assert send(body).json() == {"accepted": 1, "duplicate": False}
    again = send(body)
    assert again.status_code == 202
    assert again.json() == {"accepted": 1, "duplicate": True}
    assert stored() == (1, 1, 1)


def test_it_keeps_batch_ids_per_gateway(send, client, plant, line01):
    body = {"batch_id": "same-id", "frames": [frame(readings={"temp": 70.0})]}
    assert send(body).json()["duplicate"] is False
    _, other = gateway_issue(name="gw-8", machines=line01)
    response = send(body, auth=f"Bearer {other}")
    assert response.json() == {"accepted": 1, "duplicate": False}
    assert MachineFrame.objects.count() == 2


def test_it_accepts_frames_older_than_the_window_without_keeping_them(send):
    old = datetime.now(UTC) - timedelta(hours=30)
    response = send({"batch_id": "b-old", "frames": [frame(ts=old, readings={"temp": 1.0})]})
    assert response.json() == {"accepted": 1, "duplicate": False}
    assert MachineFrame.objects.count() == 0


def test_it_refuses_a_machine_not_bound_to_the_gateway(send):
    body = {"batch_id": "b", "frames": [frame("m:401"), frame("m:501", readings={"temp": 1.0})]}
    response = send(body)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert response.json()["detail"][0]["frame"] == 1
    assert response.json()["detail"][0]["field"] == "machine"
    assert stored() == (0, 0, 0)


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    "bad_frame, field, message",
    [
        (frame("m:999"), "machine", "Unknown machine"),
        (frame(readings={"nope": 1.0}), "readings.nope", "Unknown sensor"),
        (frame(readings={"temp": "hot"}), "readings.temp", "Expected a number"),
        (frame(readings={"temp": True}), "readings.temp", "Expected a number, got a boolean"),
        (frame(speed=False), "speed", "got a boolean"),
        (frame(readings={"temp": None}), "readings.temp", "got null"),
        (frame(readings=[1, 2]), "readings", "Expected an object"),
        (frame(status="DANCING"), "status", "Unknown status"),
        (frame(status=3), "status", "Unknown status"),
        (frame(mode="TURBO"), "mode", "Unknown mode"),
        (frame(ts=NOW + timedelta(minutes=6)), "ts", "future"),
        ({"machine": "m:401", "ts": "yesterday"}, "ts", "ISO 8601"),
        ({"machine": "m:401", "ts": "2026-11-23T10:00:00"}, "ts", "UTC offset"),
        ({"machine": "m:401"}, "ts", "Required"),
        (frame(colour="red"), "colour", "Unknown field"),
    ],
)
def test_it_rejects_a_bad_frame_naming_frame_and_field(send, bad_frame, field, message):
    body = {"batch_id": "b-bad", "frames": [frame(readings={"temp": 1.0}), bad_frame]}
    response = send(body)
    assert response.status_code == 400, response.content
    payload = response.json()
    assert payload["error"] == "invalid"
    assert payload["detail"][0]["frame"] == 1
    assert payload["detail"][0]["field"] == field
    assert message in payload["detail"][0]["message"]
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_it_rejects_nan_and_infinity(send, constant):
    text = (
        '{"batch_id": "b", "frames": [{"machine": "m:401", "ts": "' + iso(NOW) + '", '
        '"readings": {"temp": 1.0, "vibration_01": ' + constant + "}}]}"
    )
    response = send(text.encode())
    assert response.status_code == 400
    assert response.json()["detail"] == [
        {
            "frame": 0,
            "field": "readings.vibration_01",
            "message": f"{constant} is not allowed; send finite numbers only.",
        }
    ]
    assert stored() == (0, 0, 0)


def test_it_rejects_numbers_that_overflow_a_float(send):
    text = '{"batch_id": "b", "frames": [{"machine": "m:401", "ts": "%s", "speed": 1e999}]}'
    response = send((text % iso(NOW)).encode())
    assert response.status_code == 400
    assert response.json()["detail"][0]["field"] == "speed"
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"batch_id": "b", "frames": [',
        b"\xff\xfe not utf-8",
        b"   ",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_it_rejects_malformed_json(send, body):
    response = send(body)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed"
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize(
    "body, field",
    [
        ([1, 2], None),
        ({"frames": [frame()]}, "batch_id"),
        ({"batch_id": "", "frames": [frame()]}, "batch_id"),
        ({"batch_id": "b", "frames": []}, "frames"),
        ({"batch_id": "b", "frames": {}}, "frames"),
        ({"batch_id": "b", "frames": [frame()], "extra": 1}, "extra"),
    ],
)
def test_it_rejects_a_bad_envelope(send, body, field):
    response = send(body)
    assert response.status_code == 400
    assert response.json()["detail"][0].get("field") == field
    assert stored() == (0, 0, 0)


def test_it_reports_every_bad_frame(send):
    body = {"batch_id": "b", "frames": [frame(readings={"temp": "x"}), frame(speed="y")]}
    detail = send(body).json()["detail"]
    assert [(d["frame"], d["field"]) for d in detail] == [(0, "readings.temp"), (1, "speed")]


def test_it_refuses_an_oversize_body_with_413(send, settings):
    settings.TELEMETRY_MAX_BODY_BYTES = 1000
    body = {"batch_id": "b", "frames": [frame(readings={"temp": 1.0})] * 20}
    response = send(body)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert stored() == (0, 0, 0)


def test_it_refuses_a_gzip_bomb_with_413(send, settings):
    settings.TELEMETRY_MAX_BODY_BYTES = 64 * 1024
    # 50 MB of spaces inside valid JSON compresses to ~50 KB.
    bomb = gzip.compress(b'{"batch_id": "b", "frames": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < settings.TELEMETRY_MAX_BODY_BYTES
    response = send(bomb, encoding="gzip")
    assert response.status_code == 413
    assert "decompressed" in response.json()["detail"][0]["message"]
    assert stored() == (0, 0, 0)


def test_it_rejects_a_broken_gzip_stream(send):
    response = send(b"not gzip at all", encoding="gzip")
    assert response.status_code == 400
    truncated = gzipped({"batch_id": "b", "frames": [frame()]})[:-12]
    assert send(truncated, encoding="gzip").status_code == 400
    two_members = gzipped({"batch_id": "b", "frames": [frame()]}) + gzip.compress(b" " * 10)
    assert send(two_members, encoding="gzip").status_code == 400
    assert stored() == (0, 0, 0)


def test_it_refuses_other_encodings_and_media_types(send):
    body = {"batch_id": "b", "frames": [frame()]}
    assert send(body, encoding="br").status_code == 415
    assert send(body, content_type="text/plain").status_code == 415
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize("auth", ["", "Basic abc", "Bearer ", "Bearer fo_not-a-real-token"])
def test_it_requires_a_valid_token(send, auth):
    response = send({"batch_id": "b", "frames": [frame()]}, auth=auth)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert stored() == (0, 0, 0)


def test_it_answers_401_without_authorization_header(client):
    response = client.post(
        URL, data={"batch_id": "b", "frames": []}, content_type="application/json"
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="fleetops"'


def test_it_refuses_a_revoked_token(send, gateway_token):
    gateway_revoke(gateway=gateway_token[0])
    response = send({"batch_id": "b", "frames": [frame()]})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert stored() == (0, 0, 0)


def test_it_answers_429_with_retry_after_over_the_rate(send, settings):
    settings.TELEMETRY_RATE_PER_SECOND = 1
    settings.TELEMETRY_RATE_BURST = 10
    first = {"batch_id": "b1", "frames": [frame(readings={"temp": 1.0, "vibration_01": 2.0})] * 3}
    assert send(first).status_code == 202  # 3 frames + 6 readings = 9 units
    # 8 units against ~1 left: refused unless 7 s pass between the posts.
    response = send({"batch_id": "b2", "frames": [frame(readings={"temp": 1.0})] * 4})
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"] == "rate_limited"
    assert stored() == (3, 1, 1)


def test_it_refuses_get_with_a_json_405_naming_post(client, token):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"


def test_it_stores_nothing_when_one_frame_of_many_is_bad(send):
    frames = [frame(readings={"temp": float(i)}) for i in range(50)]
    frames[37]["readings"]["temp"] = "oops"
    response = send({"batch_id": "b", "frames": frames})
    assert response.json()["detail"] == [
        {"frame": 37, "field": "readings.temp", "message": "Expected a number, got a string."}
    ]
    assert MachineFrame.objects.count() == TelemetryBatch.objects.count() == 0
    assert MachineLatest.objects.count() == 0


def test_it_accepts_a_sensor_added_after_the_cache_was_filled(send, plant):
    from apps.plant.models import Sensor

    assert send({"batch_id": "b1", "frames": [frame(readings={"temp": 1.0})]}).status_code == 202
    Sensor.objects.create(machine=plant.machines["m:401"], key="torque", label="Torque")
    response = send({"batch_id": "b2", "frames": [frame(readings={"torque": 5.0})]})
    assert response.status_code == 202, response.content


def test_it_posts_json_through_the_client_helper(client, token):
    response = client.post(
        URL,
        {"batch_id": "b", "frames": [frame(readings={"temp": 1.0})]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202
    assert json.loads(response.content) == {"accepted": 1, "duplicate": False}


@pytest.mark.services
def test_it_keeps_the_rate_bucket_in_a_shared_redis_cache(send, settings, gateway_token):
    import os

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": "fleetops-test-telemetry",
        }
    }
    settings.TELEMETRY_RATE_PER_SECOND = 1
    settings.TELEMETRY_RATE_BURST = 10
    from apps.telemetry.services import gateway_rate_reset

    gateway_rate_reset(gateway=gateway_token[0])
    try:
        first = send({"batch_id": "r1", "frames": [frame(readings={"temp": 1.0})] * 4})
        assert first.status_code == 202
        response = send({"batch_id": "r2", "frames": [frame(readings={"temp": 1.0})] * 4})
        assert response.status_code == 429
        assert int(response["Retry-After"]) >= 1
    finally:
        gateway_rate_reset(gateway=gateway_token[0])
