import pytest


def test_it_reports_every_part_reachable(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert set(body["checks"]) == {"database", "channel_layer", "broker"}
    assert all(check["ok"] for check in body["checks"].values())


def test_it_needs_no_login_and_is_never_cached(client, db):
    response = client.get("/healthz")
    assert "no-cache" in response["Cache-Control"]


def test_it_answers_503_and_names_the_broken_part(client, db, settings, monkeypatch):
    from fleetops import celery as celery_module

    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(celery_module.app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_it_reports_an_unreachable_channel_layer(client, db, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1}]
            },
        }
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        response = client.get("/healthz")
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"]["ok"] is False


@pytest.mark.services
def test_it_reports_the_real_services(client, db):
    checks = client.get("/healthz").json()["checks"]
    assert checks["database"]["detail"] == "postgresql"
    assert checks["channel_layer"]["detail"] == "RedisPubSubChannelLayer"
    assert "6379" in checks["broker"]["detail"]
