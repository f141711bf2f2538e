"""GET /api/v1/gateway: what a gateway reports for, by its token."""

import pytest

from apps.plant.models import Sensor
from apps.plant.services import gateway_issue, gateway_revoke


@pytest.fixture
def gateway_and_token(plant):
    return gateway_issue(name="gw-7", machines=[plant.machines["m:402"], plant.machines["m:401"]])


def get(client, authorization=None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return client.get("/api/v1/gateway", headers=headers)


def test_it_lists_the_bound_machines_with_their_sensors_and_limits(client, gateway_and_token):
    _gateway, token = gateway_and_token
    response = get(client, f"Bearer {token}")
    assert response.status_code == 200
    answer = response.json()
    assert answer["name"] == "gw-7"
    assert [m["code"] for m in answer["machines"]] == ["m:401", "m:402"]
    sensors = answer["machines"][0]["sensors"]
    # In the order they were configured: the demo plant's speed and temp first.
    assert [s["key"] for s in sensors] == list(
        Sensor.objects.filter(machine__code="m:401").order_by("pk").values_list("key", flat=True)
    )
    assert sensors[:2] == [
        {"key": "speed", "unit": "rpm", "low_alert": None, "high_alert": 3100.0},
        {"key": "temp", "unit": "°C", "low_alert": 5.0, "high_alert": 95.0},
    ]


def test_it_records_that_the_gateway_was_seen(client, gateway_and_token):
    gateway, token = gateway_and_token
    get(client, f"Bearer {token}")
    gateway.refresh_from_db()
    assert gateway.last_used_at is not None


@pytest.mark.parametrize(
    "authorization, challenge",
    [
        (None, 'Bearer realm="fleetops"'),
        ("Basic Z3c6Nw==", 'Bearer realm="fleetops"'),
        ("Bearer fo_not-a-real-token", 'Bearer realm="fleetops", error="invalid_token"'),
    ],
)
def test_it_answers_401_without_a_known_token(client, gateway_and_token, authorization, challenge):
    response = get(client, authorization)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == challenge
    assert response.json()["error"] == "unauthorized"


def test_a_revoked_token_gets_401(client, gateway_and_token):
    gateway, token = gateway_and_token
    gateway_revoke(gateway=gateway)
    assert get(client, f"Bearer {token}").status_code == 401


def test_the_scheme_is_case_insensitive(client, gateway_and_token):
    _gateway, token = gateway_and_token
    assert get(client, f"bearer  {token} ").status_code == 200
