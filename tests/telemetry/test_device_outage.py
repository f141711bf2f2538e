"""With a dependency down the device API answers 503 JSON with Retry-After,
which the gateway agent treats as "keep queued, back off"; never HTML."""

import pytest
from django.db import OperationalError

from .conftest import frame, stored

pytestmark = pytest.mark.django_db

UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        # Port 9 (discard) is closed here: the client gets a refused connection.
        "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"socket_connect_timeout": 0.5},
    }
}


def _assert_unavailable(response):
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert body["error"] == "unavailable"
    assert "retry" in body["detail"]


def test_with_redis_unreachable_a_batch_gets_503_json_with_retry_after(send, settings):
    settings.CACHES = UNREACHABLE_REDIS
    response = send({"batch_id": "b-1", "frames": [frame()]})
    _assert_unavailable(response)
    assert stored() == (0, 0, 0)


def test_with_the_database_failing_mid_ingest_a_batch_gets_503_json(send, monkeypatch):
    def database_down(**kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed")

    monkeypatch.setattr("apps.telemetry.views.telemetry_batch_ingest", database_down)
    _assert_unavailable(send({"batch_id": "b-1", "frames": [frame()]}))


def test_an_unexpected_error_in_the_device_api_is_a_json_500_not_an_html_page(send, monkeypatch):
    def bug(**kwargs):
        raise KeyError("oops")

    monkeypatch.setattr("apps.telemetry.views.telemetry_batch_ingest", bug)
    response = send({"batch_id": "b-1", "frames": [frame()]})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal",
        "detail": "The server failed; retry the batch later.",
    }


def test_a_page_error_outside_the_device_api_keeps_djangos_handling(client, monkeypatch):
    from fleetops.outage import DeviceApiErrorMiddleware

    middleware = DeviceApiErrorMiddleware(lambda request: None)
    request = client.get("/").wsgi_request
    assert middleware.process_exception(request, OperationalError("down")) is None


def test_an_unknown_device_api_path_answers_json_404_not_a_page(client):
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": [{"message": "Not Found."}]}
