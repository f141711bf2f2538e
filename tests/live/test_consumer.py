import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from apps.live.consumers import LiveConsumer
from apps.live.hub import Hub
from apps.live.push import machines_changed
from apps.plant.models import Machine
from fleetops.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator, timeout=3):
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_type(communicator, kind, timeout=4):
    """The next message of `kind`, skipping pings and acknowledgements."""
    while True:
        message = await receive(communicator, timeout)
        if message["type"] == kind:
            return message
        # A delta may come before the snapshot when sockets join together;
        # the client ignores it (it has no baseline yet).
        skippable = (
            ("ping", "subscribed", "delta") if kind == "snapshot" else ("ping", "subscribed")
        )
        assert message["type"] in skippable, message


async def subscribe(communicator, *topics):
    await communicator.send_to(text_data=json.dumps({"type": "subscribe", "topics": list(topics)}))


@database_sync_to_async
def change_speed(code, speed):
    machine = Machine.objects.get(code=code)
    machine.speed = speed
    machine.save(update_fields=["speed"])
    machines_changed([machine.pk])


async def test_it_sends_a_snapshot_on_subscribe_then_numbered_deltas(operator1):
    communicator = await connect(operator1)
    await subscribe(communicator, "line:01")
    assert await receive(communicator) == {"type": "subscribed", "topic": "line:01"}
    snapshot = await receive_type(communicator, "snapshot")
    assert snapshot["topic"] == "line:01" and snapshot["seq"] == 0
    for region in ["line-kpis-01", "machine-row-m401", "machine-row-m404"]:
        assert f'id="{region}"' in snapshot["html"]

    await change_speed("m:402", 1234)
    first = await receive_type(communicator, "delta")
    assert first["seq"] == 1
    assert 'id="machine-row-m402"' in first["html"] and "1234" in first["html"]
    assert 'id="machine-row-m401"' not in first["html"]  # only what changed

    await change_speed("m:403", 987)
    second = await receive_type(communicator, "delta")
    assert second["seq"] == 2 and 'id="machine-row-m403"' in second["html"]
    await communicator.disconnect()


async def test_a_resync_answers_with_a_fresh_snapshot_at_the_current_seq(operator1):
    communicator = await connect(operator1)
    await subscribe(communicator, "m:401")
    await receive_type(communicator, "snapshot")
    await change_speed("m:401", 1500)
    delta = await receive_type(communicator, "delta")
    await communicator.send_to(text_data=json.dumps({"type": "resync", "topic": "m:401"}))
    snapshot = await receive_type(communicator, "snapshot")
    assert snapshot["seq"] == delta["seq"]
    assert 'id="machine-header-m401"' in snapshot["html"] and "1500" in snapshot["html"]
    await communicator.disconnect()


async def test_it_refuses_topics_the_user_may_not_see_saying_why(operator1):
    communicator = await connect(operator1)
    await subscribe(communicator, "line:03", "m:601", "chart:m:601:temp", "bogus", "line:01")
    replies = [await receive(communicator) for _ in range(5)]
    assert replies == [
        {"type": "refused", "topic": "line:03", "reason": "not allowed"},
        {"type": "refused", "topic": "m:601", "reason": "not allowed"},
        {"type": "refused", "topic": "chart:m:601:temp", "reason": "not allowed"},
        {"type": "refused", "topic": "bogus", "reason": "unknown topic"},
        {"type": "subscribed", "topic": "line:01"},
    ]
    assert "line:03" not in Hub.for_running_loop().feeds
    # A refusal is an answer, not a hang-up: the allowed topic still arrives.
    assert (await receive_type(communicator, "snapshot"))["topic"] == "line:01"
    await communicator.disconnect()


async def test_the_global_view_shows_each_user_only_their_lines(operator1, viewer):
    op = await connect(operator1)
    everyone = await connect(viewer)
    await subscribe(op, "dashboard:global")
    await subscribe(everyone, "dashboard:global")
    op_html = (await receive_type(op, "snapshot"))["html"]
    all_html = (await receive_type(everyone, "snapshot"))["html"]
    assert 'id="line-card-01"' in op_html and 'id="line-card-03"' not in op_html
    assert all(f'id="line-card-0{n}"' in all_html for n in (1, 2, 3))
    await op.disconnect()
    await everyone.disconnect()


async def test_each_region_is_rendered_once_per_tick_for_all_sockets(operator1, viewer):
    sockets = [await connect(user) for user in (operator1, viewer, operator1)]
    for socket in sockets:
        await subscribe(socket, "line:01")
        await receive_type(socket, "snapshot")
    feed = Hub.for_running_loop().feeds["line:01"]
    await asyncio.sleep(1.2)  # let a sweep pass so only the change is pending
    renders_before = feed.renders
    await change_speed("m:404", 2222)
    deltas = [await receive_type(socket, "delta") for socket in sockets]
    assert len({json.dumps(d) for d in deltas}) == 1  # the very same message
    assert feed.renders - renders_before == 1
    for socket in sockets:
        await socket.disconnect()


async def test_a_socket_that_does_not_answer_a_ping_is_closed(operator1, settings):
    settings.LIVE_PING_INTERVAL = 0.2
    settings.LIVE_PONG_TIMEOUT = 0.3
    communicator = await connect(operator1)
    ping = await receive_type(communicator, "ping")
    assert ping["ts"] > 0
    output = await communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4408}


async def test_a_socket_that_answers_pings_stays_open(operator1, settings):
    settings.LIVE_PING_INTERVAL = 0.2
    settings.LIVE_PONG_TIMEOUT = 0.3
    communicator = await connect(operator1)
    for _ in range(4):
        ping = await receive_type(communicator, "ping")
        await communicator.send_to(text_data=json.dumps({"type": "pong", "ts": ping["ts"]}))
    # Well past the pong timeout, the server still talks to it: not closed.
    output = await communicator.receive_output(timeout=2)
    assert output["type"] == "websocket.send", output
    await communicator.disconnect()


def hold_sends(consumer) -> asyncio.Event:
    """Make the server's send to this socket block until the returned event
    is set, as a server with backpressure does while its client is not
    reading (daphne never does: Twisted buffers). Closing still goes out."""
    release = asyncio.Event()
    server_send = consumer.base_send

    async def send(message):
        if message["type"] == "websocket.send":
            await release.wait()
        await server_send(message)

    consumer.base_send = send
    return release


async def line_subscriber(communicator):
    await subscribe(communicator, "line:01")
    await receive_type(communicator, "snapshot")
    return next(iter(Hub.for_running_loop().feeds["line:01"].subscribers))


async def test_a_socket_whose_sends_back_up_is_closed_not_buffered(operator1, settings):
    settings.LIVE_OUTBOX_LIMIT = 5
    communicator = await connect(operator1)
    consumer = await line_subscriber(communicator)
    hold_sends(consumer)
    for n in range(50):  # one send blocked, far more than the outbox holds behind it
        consumer.deliver(json.dumps({"type": "delta", "n": n}))
    output = await communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4429, "reason": "Too slow"}
    assert "line:01" not in Hub.for_running_loop().feeds


async def test_messages_held_behind_a_slow_send_go_out_in_order(operator1, settings):
    settings.LIVE_OUTBOX_LIMIT = 5
    communicator = await connect(operator1)
    consumer = await line_subscriber(communicator)
    release = hold_sends(consumer)
    for n in range(5):  # the first is being sent, four wait behind it
        consumer.deliver(json.dumps({"type": "delta", "n": n}))
    assert await communicator.receive_nothing(timeout=0.2)
    release.set()
    assert [(await receive(communicator))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    consumer.deliver(json.dumps({"type": "delta", "n": 5}))  # and it stays open
    assert (await receive(communicator))["n"] == 5
    await communicator.disconnect()


async def test_it_answers_bad_messages_with_an_error_and_stays_open(operator1):
    communicator = await connect(operator1)
    for bad in ["not json", "[1]", '{"type": "launch"}', '{"type": "subscribe", "topics": "x"}']:
        await communicator.send_to(text_data=bad)
        assert (await receive(communicator))["type"] == "error"
    await subscribe(communicator, "line:01")
    assert (await receive_type(communicator, "snapshot"))["topic"] == "line:01"
    await communicator.disconnect()


async def test_anonymous_sockets_are_closed_signed_out(plant):
    # Accepted first, so the browser reads the 4401 (a refused handshake
    # reaches it as 1006, which it would retry for ever).
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = AnonymousUser()
    connected, _ = await communicator.connect()
    assert connected
    output = await communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4401, "reason": "Signed out"}


async def test_a_foreign_origin_is_refused_by_the_asgi_stack(plant):
    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1")],
    )
    connected, _ = await communicator.connect()
    assert not connected
