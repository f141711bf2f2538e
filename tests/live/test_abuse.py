"""A socket cannot hurt the server or other users: what one client may ask
for is bounded, malformed input gets an answer instead of a traceback, and
a feed ends however its sockets died."""

import asyncio
import json
import logging

import pytest

from apps.live.hub import Hub
from tests.live.test_consumer import connect, line_subscriber, receive, receive_type, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


def admins_topics(plant) -> list[str]:
    """40 topics the superuser may watch."""
    machines = sorted(plant.machines)
    return [
        "dashboard:global",
        *(f"line:{code}" for code in sorted(plant.lines)),
        *machines,
        *(f"chart:{m}:{key}" for m in machines for key in ("speed", "temp_01")),
    ]


async def replies(communicator, count: int) -> list[dict]:
    """The next `count` acknowledgements and refusals, skipping data and pings."""
    found = []
    while len(found) < count:
        message = await receive(communicator, timeout=10)
        if message["type"] in ("subscribed", "refused", "error"):
            found.append(message)
    return found


async def test_a_thousand_copies_of_a_topic_cost_one_subscription_and_one_snapshot(operator1):
    communicator = await connect(operator1)
    await subscribe(communicator, *["line:01"] * 1000)
    assert await receive(communicator) == {"type": "subscribed", "topic": "line:01"}
    assert (await receive_type(communicator, "snapshot"))["topic"] == "line:01"
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_one_message_may_name_at_most_32_new_topics(operator1):
    communicator = await connect(operator1)
    names = [f"m:{9000 + n}" for n in range(40)]  # no such machines: cheap to refuse
    await subscribe(communicator, *names)
    answers = await replies(communicator, 33)
    assert answers[0] == {
        "type": "refused",
        "topics": names[32:],
        "reason": "too many topics: at most 32 on one socket",
    }
    assert [a["topic"] for a in answers[1:]] == names[:32]
    assert {a["reason"] for a in answers[1:]} == {"not allowed"}
    await communicator.disconnect()


async def test_one_socket_may_hold_at_most_32_topics(admin_user, plant):
    topics = admins_topics(plant)
    communicator = await connect(admin_user)
    await subscribe(communicator, *topics[:30])
    assert {a["type"] for a in await replies(communicator, 30)} == {"subscribed"}
    await subscribe(communicator, *topics[30:35])
    answers = await replies(communicator, 3)
    assert answers[0] == {
        "type": "refused",
        "topics": topics[32:35],
        "reason": "too many topics: at most 32 on one socket",
    }
    assert answers[1:] == [{"type": "subscribed", "topic": t} for t in topics[30:32]]
    await communicator.disconnect()


MALFORMED = [
    ('{"type": "resync", "topic": ["x"]}', "topic must be a topic name"),
    ('{"type": "unsubscribe", "topics": 5}', "topics must be a list of topic names"),
    ('{"type": "subscribe", "topics": [1, 2]}', "topics must be a list of topic names"),
    ('{"type": "subscribe", "topics": ["' + "x" * 500 + '"]}', "at most 100 characters"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ('{"a":' * 2000 + "1" + "}" * 2000, "nested too deeply"),
    ("x" * 20_000, "message too large: 20000 characters, at most 16384"),
    ("not json", "must be JSON objects"),
    ("[1]", "must be JSON objects"),
    ('{"type": 5}', "type must be a string"),
    ('{"type": "launch"}', "unknown message type 'launch'"),
]


@pytest.mark.parametrize("text,problem", MALFORMED, ids=[p for _, p in MALFORMED])
async def test_a_malformed_message_gets_an_error_naming_it_and_the_socket_stays_open(
    operator1, text, problem, caplog
):
    caplog.set_level(logging.WARNING)
    communicator = await connect(operator1)
    await communicator.send_to(text_data=text)
    reply = await receive(communicator)
    assert reply["type"] == "error" and problem in reply["error"]
    await subscribe(communicator, "line:01")
    assert (await receive_type(communicator, "snapshot"))["topic"] == "line:01"
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
    await communicator.disconnect()


async def test_a_binary_frame_gets_an_error(operator1):
    communicator = await connect(operator1)
    await communicator.send_to(bytes_data=b'{"type": "pong"}')
    assert await receive(communicator) == {
        "type": "error",
        "error": "messages must be JSON text, not binary",
    }
    await communicator.disconnect()


async def test_a_client_that_answers_pings_blindly_and_never_reads_is_closed(operator1, settings):
    settings.LIVE_UNREAD_LIMIT = 100_000
    communicator = await connect(operator1)
    consumer = await line_subscriber(communicator)
    for _ in range(30):  # 300 kB sent; the client reads none of it
        consumer.deliver(json.dumps({"type": "delta", "pad": "x" * 10_000}))
        consumer._ping()
        await communicator.send_to(text_data=json.dumps({"type": "pong", "ts": 0}))
        await asyncio.sleep(0)
    while (output := await communicator.receive_output(timeout=2))["type"] != "websocket.close":
        pass
    assert (output["code"], output["reason"]) == (4429, "Too slow")
    assert "line:01" not in Hub.for_running_loop().feeds


async def test_a_client_that_reads_and_echoes_each_ping_may_receive_far_more(operator1, settings):
    settings.LIVE_UNREAD_LIMIT = 100_000
    communicator = await connect(operator1)
    consumer = await line_subscriber(communicator)
    for _ in range(30):  # 300 kB in all, never more than 10 kB unread
        consumer.deliver(json.dumps({"type": "delta", "pad": "x" * 10_000}))
        consumer._ping()
        assert (await receive(communicator))["type"] == "delta"
        ping = await receive_type(communicator, "ping")
        await communicator.send_to(text_data=json.dumps({"type": "pong", "ts": ping["ts"]}))
        while consumer.awaiting_pong:  # the server has handled the pong
            await asyncio.sleep(0.01)
    await communicator.send_to(text_data=json.dumps({"type": "resync", "topic": "line:01"}))
    assert (await receive_type(communicator, "snapshot"))["topic"] == "line:01"
    await communicator.disconnect()


async def test_fifty_sockets_dropped_abruptly_leave_no_feed_and_nothing_running(operator1, viewer):
    topics = ["line:01", "m:401", "m:402", "dashboard:global", "line:02"]
    sockets = []
    for n in range(50):
        socket = await connect(viewer if n % 2 else operator1)
        await subscribe(socket, *([topics[n % 4]] if n % 2 == 0 else topics))
        sockets.append(socket)
    for socket in sockets[:20]:
        await receive_type(socket, "snapshot", timeout=10)
    hub = Hub.for_running_loop()
    assert hub.feeds

    for n, socket in enumerate(sockets):
        if n % 3 == 0:
            socket.future.cancel()  # the server killed the application instance
        else:
            # The connection dropped (no closing handshake), mid-subscribe or not.
            await socket.send_input({"type": "websocket.disconnect", "code": 1006})
    await asyncio.sleep(1.5)

    assert hub.feeds == {}
    running = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("live-tick")]
    assert running == []
    for socket in sockets:
        await socket.wait(timeout=2)
