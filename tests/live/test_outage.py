"""A page opening its socket while the database or Redis is down gets a
clean "try again later" close (1013), which htmx's extension reconnects
from on its schedule with the page showing DISCONNECTED; never a 500."""

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.live import consumers
from apps.live.consumers import CLOSE_TRY_AGAIN_LATER, LiveConsumer

pytestmark = pytest.mark.django_db(transaction=True)


async def _opened_then_closed(user) -> dict:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    closed = await communicator.receive_output(timeout=5)
    await communicator.wait()
    return closed


async def test_with_redis_down_a_new_socket_is_told_to_try_again_later(operator1, monkeypatch):
    async def redis_down(group, channel):
        raise RedisConnectionError("Connection refused")

    # The consumer's layer is this same instance (one per alias and process).
    monkeypatch.setattr(get_channel_layer(), "group_add", redis_down)
    closed = await _opened_then_closed(operator1)
    assert closed == {
        "type": "websocket.close",
        "code": CLOSE_TRY_AGAIN_LATER,
        "reason": "Service unavailable",
    }


async def test_with_the_database_down_a_new_socket_is_told_to_try_again_later(
    operator1, monkeypatch
):
    def database_down(*, user):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(consumers, "visible_line_codes", database_down)
    closed = await _opened_then_closed(operator1)
    assert closed["code"] == CLOSE_TRY_AGAIN_LATER
