"""Who may watch is checked all the time, not only at connect.

Sockets here come through the real ASGI stack with a session cookie, as a
browser's do, so a logout or a password change ends exactly the sessions
Django itself would stop honouring.
"""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client

from apps.live import consumers
from apps.live.hub import Hub
from apps.plant import changes
from apps.plant.models import LineMembership
from fleetops.asgi import application
from tests.live.test_consumer import change_speed, receive, receive_type, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

# The promise: an affected socket is closed or pruned within 2 s.
PROMPTLY = 2


@sync_to_async
def signed_in_browser(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


async def open_socket(browser: Client) -> WebsocketCommunicator:
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={browser.session.session_key}"
    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[
            (b"origin", b"http://127.0.0.1"),
            (b"host", b"127.0.0.1"),
            (b"cookie", cookie.encode()),
        ],
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def watching(browser: Client, *topics) -> WebsocketCommunicator:
    socket = await open_socket(browser)
    await subscribe(socket, *topics)
    for _ in topics:
        await receive_type(socket, "snapshot")
    return socket


async def closed_with(socket: WebsocketCommunicator) -> tuple[int, str | None]:
    """The close code (and reason) the socket gets, skipping what came before."""
    while True:
        output = await socket.receive_output(timeout=PROMPTLY)
        if output["type"] == "websocket.close":
            return output["code"], output.get("reason")


async def still_streaming(socket: WebsocketCommunicator, topic: str) -> bool:
    await socket.send_to(text_data=json.dumps({"type": "resync", "topic": topic}))
    return (await receive_type(socket, "snapshot"))["topic"] == topic


@sync_to_async
def log_out(browser: Client) -> None:
    assert browser.post("/logout/").status_code == 302


async def test_a_logout_closes_every_socket_of_that_session_signed_out(operator1):
    browser = await signed_in_browser(operator1)
    other_device = await signed_in_browser(operator1)
    tabs = [await watching(browser, "line:01") for _ in range(2)]
    elsewhere = await watching(other_device, "line:01")

    await log_out(browser)

    for tab in tabs:
        assert await closed_with(tab) == (4401, "Signed out")
    # The user is still signed in on the other device: it keeps watching.
    assert await still_streaming(elsewhere, "line:01")
    await elsewhere.disconnect()


async def test_a_deactivated_user_is_signed_out_on_every_session(operator1):
    sockets = [await watching(await signed_in_browser(operator1), "m:401") for _ in range(2)]

    operator1.is_active = False
    await database_sync_to_async(operator1.save)()

    for socket in sockets:
        assert await closed_with(socket) == (4401, "Signed out")
    assert "m:401" not in Hub.for_running_loop().feeds


async def test_a_password_change_signs_out_the_sessions_it_ended(operator1):
    socket = await watching(await signed_in_browser(operator1), "line:01")

    operator1.set_password("a-new-password-1")
    await database_sync_to_async(operator1.save)()

    assert await closed_with(socket) == (4401, "Signed out")


async def test_a_login_elsewhere_leaves_open_sockets_alone(operator1):
    socket = await watching(await signed_in_browser(operator1), "line:01")
    await signed_in_browser(operator1)  # saves last_login on the user
    assert await socket.receive_nothing(timeout=0.5)
    assert await still_streaming(socket, "line:01")
    await socket.disconnect()


@database_sync_to_async
def remove_membership(user, line_code: str) -> None:
    memberships = list(
        LineMembership.objects.select_related("user", "line").filter(
            user=user, line__code=line_code
        )
    )
    changes.membership_delete(memberships=memberships, actor=None)


async def test_a_removed_membership_revokes_that_lines_topics_and_nothing_else(operator1):
    browser = await signed_in_browser(operator1)
    socket = await watching(browser, "line:01", "m:401", "dashboard:global")

    await remove_membership(operator1, "01")

    revoked = [await receive_type(socket, "revoked", timeout=PROMPTLY) for _ in range(2)]
    assert revoked == [
        {"type": "revoked", "topic": "line:01", "reason": "no longer allowed"},
        {"type": "revoked", "topic": "m:401", "reason": "no longer allowed"},
    ]
    feeds = Hub.for_running_loop().feeds
    assert "line:01" not in feeds and "m:401" not in feeds
    # The overview is still theirs, without line 01's card from now on.
    await change_speed("m:402", 1717)
    await socket.send_to(text_data=json.dumps({"type": "resync", "topic": "dashboard:global"}))
    overview = await receive_type(socket, "snapshot")
    assert 'id="line-card-01"' not in overview["html"]
    await socket.send_to(text_data=json.dumps({"type": "resync", "topic": "line:01"}))
    reply = await receive(socket)
    while reply["type"] in ("ping", "delta"):
        reply = await receive(socket)
    assert reply == {"type": "error", "error": "not subscribed to 'line:01'"}
    await socket.disconnect()


async def test_a_downgrade_to_viewer_keeps_the_line_on_screen(operator1, monkeypatch):
    socket = await watching(await signed_in_browser(operator1), "line:01")
    checked = []
    verdict = consumers.access_verdict

    def counted(*args, **kwargs):
        checked.append(1)
        return verdict(*args, **kwargs)

    monkeypatch.setattr(consumers, "access_verdict", counted)

    @database_sync_to_async
    def downgrade():
        membership = LineMembership.objects.get(user=operator1, line__code="01")
        membership.role = LineMembership.Role.VIEWER
        changes.membership_save(membership=membership, actor=None)

    await downgrade()
    for _ in range(50):  # the re-check the membership change asked for has run
        if checked:
            break
        await asyncio.sleep(0.05)
    assert checked
    assert await still_streaming(socket, "line:01")
    await socket.disconnect()


async def test_the_access_sweep_catches_a_change_nobody_announced(operator1, settings):
    settings.LIVE_ACCESS_RECHECK = 0.3
    browser = await signed_in_browser(operator1)
    socket = await watching(browser, "line:01")
    other = await watching(await signed_in_browser(operator1), "dashboard:global")

    # Straight in the database: no push, as if the message had been lost.
    await database_sync_to_async(
        LineMembership.objects.filter(user=operator1, line__code="01").delete
    )()
    assert (await receive_type(socket, "revoked", timeout=PROMPTLY))["topic"] == "line:01"
    await database_sync_to_async(Session.objects.filter(pk=other_session(other)).delete)()
    assert await closed_with(other) == (4401, "Signed out")
    await socket.disconnect()


def other_session(socket: WebsocketCommunicator) -> str:
    cookie = dict(socket.scope["headers"])[b"cookie"].decode()
    return cookie.partition("=")[2]
