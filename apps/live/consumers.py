import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from .topics import group_name, topic_allowed


class LiveConsumer(AsyncWebsocketConsumer):
    """Browser socket: subscribe to topics the user may see, receive HTML.

    Messages from the browser are JSON: `{"type": "subscribe", "topics":
    [...]}`. Fragments arrive as the HTML text htmx's ws extension swaps in.
    """

    async def connect(self):
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            await self.close(code=4401)
            return
        self.topics: set[str] = set()
        await self.accept()

    async def disconnect(self, code):
        for topic in getattr(self, "topics", ()):
            await self.channel_layer.group_discard(group_name(topic), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
        except json.JSONDecodeError:
            await self._send_json({"type": "error", "error": "messages must be JSON"})
            return
        if not isinstance(message, dict):
            await self._send_json({"type": "error", "error": "messages must be JSON objects"})
            return
        if message.get("type") == "subscribe":
            await self._subscribe(message.get("topics") or [])
        else:
            await self._send_json(
                {"type": "error", "error": f"unknown type {message.get('type')!r}"}
            )

    async def _subscribe(self, topics):
        for topic in topics:
            if not isinstance(topic, str):
                continue
            allowed = await database_sync_to_async(topic_allowed)(
                user=self.scope["user"], topic=topic
            )
            if not allowed:
                await self._send_json({"type": "refused", "topic": topic})
                continue
            # Join first: anything pushed from here on reaches this socket.
            await self.channel_layer.group_add(group_name(topic), self.channel_name)
            self.topics.add(topic)
            await self._send_json({"type": "subscribed", "topic": topic})

    async def live_fragment(self, event):
        await self.send(text_data=event["html"])

    async def _send_json(self, payload):
        await self.send(text_data=json.dumps(payload))
