"""The live path on the real services: a Celery worker process renders a
fragment and it reaches WebSocket clients through the Redis channel layer."""

import asyncio
import json
import time
from http.cookies import SimpleCookie

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from apps.live.consumers import LiveConsumer
from apps.live.push import push_fragment
from apps.plant.services import machine_set_maintenance_lock
from tests.support.processes import celery_worker, daphne_server

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def session_cookie_for(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    cookie = SimpleCookie()
    cookie[settings.SESSION_COOKIE_NAME] = session.session_key
    return cookie.output(header="", attrs=[]).strip()


async def test_a_celery_worker_process_pushes_a_machine_row_to_a_socket(
    plant, operator1, admin_user
):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = operator1
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data=json.dumps({"type": "subscribe", "topics": ["line:01"]}))
    assert json.loads(await communicator.receive_from())["type"] == "subscribed"

    with celery_worker():
        # on_commit queues the task on Redis; only the worker process can run it.
        await sync_to_async(machine_set_maintenance_lock)(
            machines=[plant.machines["m:402"]], actor=admin_user, locked=True
        )
        html = await communicator.receive_from(timeout=30)
    assert 'id="machine-row-m402"' in html, html
    assert 'hx-swap-oob="true"' in html
    assert "MAINTENANCE_LOCK" in html
    await communicator.disconnect()


async def test_more_than_100_sockets_on_one_daphne_all_receive_a_push(plant, operator1):
    """redis-py 8's default pool (100 connections, 5 s timeout) broke
    channels-redis under load; settings raise both limits."""
    cookie = await sync_to_async(session_cookie_for)(operator1)
    clients = 150
    with daphne_server() as (base_url, _proc):
        ws_url = base_url.replace("http", "ws") + "/ws/live/"
        headers = {"Cookie": cookie, "Origin": base_url}

        async def open_one():
            socket = await websockets.connect(ws_url, additional_headers=headers, open_timeout=20)
            await socket.send(json.dumps({"type": "subscribe", "topics": ["line:01"]}))
            assert json.loads(await asyncio.wait_for(socket.recv(), 20))["type"] == "subscribed"
            return socket

        sockets = await asyncio.gather(*(open_one() for _ in range(clients)))
        try:
            started = time.monotonic()
            await sync_to_async(push_fragment)(topic="line:01", html='<p id="probe">all</p>')
            received = await asyncio.gather(
                *(asyncio.wait_for(s.recv(), 20) for s in sockets), return_exceptions=True
            )
        finally:
            await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    assert received == ['<p id="probe">all</p>'] * clients, time.monotonic() - started
