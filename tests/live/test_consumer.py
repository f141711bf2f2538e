import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.live.consumers import LiveConsumer
from apps.live.push import push_fragment
from fleetops.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def subscribe(communicator, *topics):
    await communicator.send_to(text_data=json.dumps({"type": "subscribe", "topics": list(topics)}))
    return [json.loads(await communicator.receive_from()) for _ in topics]


async def test_it_subscribes_to_a_members_line_and_delivers_fragments(operator1):
    communicator = await connect(operator1)
    assert await subscribe(communicator, "line:01") == [{"type": "subscribed", "topic": "line:01"}]
    await database_sync_to_async(push_fragment)(topic="line:01", html='<tr id="x">hi</tr>')
    assert await communicator.receive_from() == '<tr id="x">hi</tr>'
    await communicator.disconnect()


async def test_it_refuses_topics_the_user_may_not_see(operator1):
    communicator = await connect(operator1)
    replies = await subscribe(communicator, "line:03", "m:601", "m:401", "bogus")
    assert replies == [
        {"type": "refused", "topic": "line:03"},
        {"type": "refused", "topic": "m:601"},
        {"type": "subscribed", "topic": "m:401"},
        {"type": "refused", "topic": "bogus"},
    ]
    await database_sync_to_async(push_fragment)(topic="line:03", html="<p>secret</p>")
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_it_answers_bad_messages_with_an_error(operator1):
    communicator = await connect(operator1)
    await communicator.send_to(text_data="not json")
    assert json.loads(await communicator.receive_from())["type"] == "error"
    await communicator.disconnect()


async def test_anonymous_sockets_are_closed(plant):
    from django.contrib.auth.models import AnonymousUser

    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = AnonymousUser()
    connected, code = await communicator.connect()
    assert not connected and code == 4401


async def test_a_foreign_origin_is_refused_by_the_asgi_stack(plant):
    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1")],
    )
    connected, _ = await communicator.connect()
    assert not connected
