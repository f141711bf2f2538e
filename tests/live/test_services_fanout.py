"""The live path on the real services: changes made in one process reach
sockets held by another, through the Redis channel layer."""

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime

import pytest
import websockets
from asgiref.sync import sync_to_async

from apps.live.push import machines_changed
from apps.plant.models import Machine
from apps.plant.services import gateway_issue, machine_set_maintenance_lock
from tests.support.processes import daphne_server
from tests.support.sessions import session_cookie_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


async def next_delta(recv, *, containing: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(recv(), deadline - time.monotonic()))
        if message["type"] == "delta" and containing in message["html"]:
            return message


async def open_socket(base_url: str, cookie: str, topic: str):
    socket = await websockets.connect(
        base_url.replace("http", "ws") + "/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": base_url},
        open_timeout=20,
    )
    await socket.send(json.dumps({"type": "subscribe", "topics": [topic]}))
    while json.loads(await asyncio.wait_for(socket.recv(), 20))["type"] != "snapshot":
        pass
    return socket


async def test_an_admin_action_in_one_process_reaches_a_socket_of_another(
    plant, operator1, admin_user
):
    """No worker carries the announcement: the plant service pushes after
    its commit, and Redis takes it to the daphne holding the socket."""
    cookie = await sync_to_async(session_cookie_for)(operator1)
    with daphne_server() as (base_url, _proc):
        socket = await open_socket(base_url, cookie, "line:01")
        try:
            await sync_to_async(machine_set_maintenance_lock)(
                machines=[plant.machines["m:402"]],
                actor=admin_user,
                locked=True,
                reason="bearing swap",
            )
            delta = await next_delta(socket.recv, containing='id="machine-row-m402"')
        finally:
            await socket.close()
    assert "MAINTENANCE_LOCK" in delta["html"]


async def test_more_than_100_sockets_on_one_daphne_all_receive_a_change(plant, operator1):
    """redis-py 8's default pool (100 connections, 5 s timeout) broke
    channels-redis under load; settings raise both limits."""
    cookie = await sync_to_async(session_cookie_for)(operator1)
    clients = 150
    with daphne_server() as (base_url, _proc):
        sockets = await asyncio.gather(
            *(open_socket(base_url, cookie, "line:01") for _ in range(clients))
        )
        try:

            def change():
                Machine.objects.filter(code="m:403").update(speed=2718)
                machines_changed([plant.machines["m:403"].pk])

            await sync_to_async(change)()
            deltas = await asyncio.gather(
                *(next_delta(s.recv, containing='id="machine-row-m403"') for s in sockets),
                return_exceptions=True,
            )
        finally:
            await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    failures = [d for d in deltas if isinstance(d, BaseException)]
    assert not failures, failures[:3]
    assert all("2718" in d["html"] for d in deltas), [d["html"] for d in deltas][:2]
    assert len({d["seq"] for d in deltas}) == 1


async def test_a_reading_ingested_through_one_daphne_shows_on_a_socket_of_another(plant, operator1):
    cookie = await sync_to_async(session_cookie_for)(operator1)
    _gateway, token = await sync_to_async(gateway_issue)(
        name="gw-two-procs", machines=[plant.machines["m:401"]]
    )
    with daphne_server() as (ingest_url, _a), daphne_server() as (watch_url, _b):
        socket = await open_socket(watch_url, cookie, "line:01")
        try:
            frame = {
                "machine": "m:401",
                "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "status": "RUNNING",
                "speed": 1618,
                "target_speed": 1700,
                "mode": "RUN",
                "readings": {"temp": 70.5},
            }
            request = urllib.request.Request(
                f"{ingest_url}/api/v1/telemetry",
                data=json.dumps({"batch_id": "two-procs:1", "frames": [frame]}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            response = await asyncio.to_thread(urllib.request.urlopen, request, timeout=20)
            assert response.status == 202
            delta = await next_delta(socket.recv, containing='id="machine-row-m401"')
        finally:
            await socket.close()
    assert "1618" in delta["html"] and "RUNNING" in delta["html"]
