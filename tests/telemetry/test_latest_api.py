from datetime import UTC, datetime, timedelta

import pytest

from apps.plant.services import gateway_issue, gateway_revoke

from .conftest import frame, iso

pytestmark = pytest.mark.django_db


def url(code="m:401"):
    return f"/api/v1/machines/{code}/latest"


@pytest.fixture
def reported(send):
    ts = datetime.now(UTC) - timedelta(seconds=2)
    response = send(
        {
            "batch_id": "1",
            "frames": [
                frame(
                    ts=ts,
                    status="RUNNING",
                    speed=1480,
                    target_speed=1500,
                    mode="RUN",
                    readings={"temp": 98.5, "vibration_01": 0.12},
                ),
            ],
        }
    )
    assert response.status_code == 202
    return ts


def test_it_shows_the_latest_state_to_a_line_member(client_for, operator1, reported):
    response = client_for(operator1).get(url())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "machine",
        "line",
        "status",
        "speed",
        "target_speed",
        "mode",
        "stale",
        "last_seen_at",
        "alerts",
        "readings",
    }
    assert (body["machine"], body["line"], body["stale"]) == ("m:401", "01", False)
    assert body["status"]["value"] == "RUNNING"
    assert body["status"]["ts"] == iso(reported)
    assert body["status"]["age_s"] >= 2
    assert body["readings"]["temp"]["value"] == 98.5
    assert set(body["readings"]) == {"temp", "vibration_01"}
    assert [a["sensor"] for a in body["alerts"]] == ["temp"]


def test_it_shows_it_to_a_viewer_of_the_line(client_for, viewer, reported):
    assert client_for(viewer).get(url()).status_code == 200


def test_it_refuses_an_outsider(client_for, outsider, reported):
    response = client_for(outsider).get(url())
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_it_refuses_an_operator_of_another_line(client_for, operator1, reported):
    assert client_for(operator1).get(url("m:501")).status_code == 403


def test_it_answers_401_to_anonymous_users(client, reported):
    response = client.get(url())
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_answers_404_for_an_unknown_machine(client_for, operator1, client, token):
    response = client.get(url("m:999"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
    assert client_for(operator1).get(url("m:999")).status_code == 404


def test_it_shows_a_bound_machine_to_its_token(client, token, reported):
    response = client.get(url(), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.json()["speed"]["value"] == 1480


def test_it_refuses_a_token_not_bound_to_the_machine(client, token, plant):
    assert client.get(url("m:501"), HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403
    _, other = gateway_issue(name="gw-5", machines=[plant.machines["m:501"]])
    assert client.get(url(), HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 403


def test_it_refuses_bad_and_revoked_tokens(client, gateway_token):
    gateway, token = gateway_token
    assert client.get(url(), HTTP_AUTHORIZATION="Bearer fo_nope").status_code == 401
    assert client.get(url(), HTTP_AUTHORIZATION="Basic abc").status_code == 401
    gateway_revoke(gateway=gateway)
    assert client.get(url(), HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_it_answers_nulls_for_a_machine_that_never_reported(client_for, operator1):
    body = client_for(operator1).get(url("m:404")).json()
    assert body["status"] == {"value": None, "ts": None, "age_s": None}
    assert body["readings"] == {} and body["stale"] is True


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_a_write_method_gets_a_json_405_not_the_csrf_page(client, token, method):
    # The CSRF check used to answer these with its HTML 403 before the view.
    response = getattr(client, method)(url(), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json()["error"] == "method_not_allowed"
