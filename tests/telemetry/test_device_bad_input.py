"""Inputs a black-box probe of the device API found answered with HTML 500s.

A gateway retries a 5xx forever; a 4xx tells it to quarantine the batch.
Each case must answer a JSON 4xx (400 naming the field), and store nothing.
"""

import json
import urllib.error
import urllib.request

import pytest
from django.db import connections

from tests.support.processes import daphne_server

from .conftest import URL, frame, stored

pytestmark = pytest.mark.django_db


def _problems(response) -> list[tuple]:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "invalid"
    return [(p.get("frame"), p.get("field"), p["message"]) for p in body["detail"]]


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_timestamp_outside_the_utc_calendar_gets_400_and_nothing_is_stored(send, ts):
    response = send({"batch_id": "b-1", "frames": [{"machine": "m:401", "ts": ts}]})
    problems = _problems(response)
    assert problems[0][:2] == (0, "ts")
    assert "out of range" in problems[0][2] or "future" in problems[0][2]
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize("machine", [["m:401"], {"code": "m:401"}, 401])
def test_a_machine_that_is_not_a_string_gets_400_naming_the_field(send, machine):
    response = send({"batch_id": "b-1", "frames": [frame(machine=machine)]})
    assert (0, "machine", "Required: a machine code such as m:401.") in _problems(response)
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize("batch_id", ["b\x00-1", "b-\ud800"])
def test_a_batch_id_with_nul_or_a_lone_surrogate_gets_400(send, batch_id):
    body = json.dumps({"batch_id": batch_id, "frames": [frame()]}).encode()
    problems = _problems(send(body))
    assert problems == [
        (None, "batch_id", "NUL characters and unpaired surrogates are not allowed.")
    ]
    assert stored() == (0, 0, 0)


@pytest.mark.parametrize("machine", ["m:4\x0001", "m:\udc00"])
def test_a_machine_code_with_nul_or_a_lone_surrogate_gets_400_and_the_good_frame_is_not_stored(
    send, machine
):
    body = json.dumps({"batch_id": "b-1", "frames": [frame(), frame(machine=machine)]}).encode()
    problems = _problems(send(body))
    assert problems == [(1, "machine", "NUL characters and unpaired surrogates are not allowed.")]
    assert stored() == (0, 0, 0)


def test_after_a_refused_bad_batch_the_same_gateway_still_stores_a_good_one(send):
    send(json.dumps({"batch_id": "b-\ud800", "frames": [frame()]}).encode())
    response = send({"batch_id": "b-2", "frames": [frame(readings={"temp": 70.0})]})
    assert response.status_code == 202, response.content
    assert stored() == (1, 1, 1)


def _post_to(server: str, *, token: str, body: bytes, content_type: str):
    request = urllib.request.Request(
        server + URL,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=x"],
)
def test_a_multipart_body_gets_the_415_json_from_daphne_too(token, content_type):
    # Twisted under daphne used to answer an unparsable form body itself
    # with an empty 400, before Django saw the request.
    with daphne_server() as (server, _proc):
        status, headers, body = _post_to(
            server, token=token, body=b'{"batch_id": "b-1"}', content_type=content_type
        )
    assert (status, headers["Content-Type"]) == (415, "application/json"), body
    assert json.loads(body)["error"] == "unsupported_media_type"
    assert stored() == (0, 0, 0)
    connections.close_all()


@pytest.mark.parametrize("code", ["m:4%0001", "%00"])
def test_a_machine_code_with_nul_on_the_latest_endpoint_gets_a_json_404(client, token, code):
    response = client.get(f"/api/v1/machines/{code}/latest", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 404, response.content
    assert response.json()["error"] == "not_found"
