import pytest
from django.utils import timezone

from apps.plant.models import Gateway
from apps.plant.services import gateway_issue


def test_it_reports_every_part_reachable(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert set(body["checks"]) == {"database", "channel_layer", "broker", "gateway_clocks"}
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


def test_it_lists_the_gateways_whose_clock_is_off_to_staff_without_failing(
    client, db, plant, admin_user
):
    ahead, _ = gateway_issue(name="gw-fast", machines=[])
    fine, _ = gateway_issue(name="gw-fine", machines=[])
    revoked, _ = gateway_issue(name="gw-gone", machines=[])
    now = timezone.now()
    ahead.clock_offset_record(offset_s=-240.0, now=now)
    fine.clock_offset_record(offset_s=0.3, now=now)
    revoked.clock_offset_record(offset_s=-999.0, now=now)
    Gateway.objects.filter(pk=revoked.pk).update(revoked_at=now)
    anonymous = client.get("/healthz").json()["checks"]["gateway_clocks"]["detail"]
    assert anonymous == {"gateways": 2, "worst_offset_s": -240.0, "skewed": 1}
    client.force_login(admin_user)
    response = client.get("/healthz")
    assert response.status_code == 200
    clocks = response.json()["checks"]["gateway_clocks"]
    assert clocks["ok"] is True
    assert clocks["detail"] == {
        "gateways": 2,
        "worst_offset_s": -240.0,
        "skewed": {"gw-fast": -240.0},
    }


@pytest.mark.services
def test_it_reports_the_real_services(client, db):
    checks = client.get("/healthz").json()["checks"]
    assert checks["database"]["detail"] == "postgresql"
    assert checks["channel_layer"]["detail"] == "RedisPubSubChannelLayer"
    assert "6379" in checks["broker"]["detail"]
