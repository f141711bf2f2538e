"""The gateway socket at /ws/gateway/: setpoint commands out, answers in.

A gateway authenticates with its device token in the handshake's
`Authorization: Bearer` header (no browser, so no Origin to check). On
connect it is sent every still-pending command for its machines, so a
command issued while it was away is not lost; the command carries its
expiry, and gateways never apply an expired one.

Gateway → server: {"type": "ack"|"nack", "tx_id", "machine", "reason"?}.
"""

import json
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from apps.plant.auth import bearer_token
from apps.plant.selectors import gateway_for_token
from apps.plant.services import gateway_touch

from . import services


def _authorization(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value.decode("latin-1")
    return None


class GatewayConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.gateway = await database_sync_to_async(gateway_for_token)(
            token=bearer_token(_authorization(self.scope))
        )
        if self.gateway is None:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.group = services.gateway_group(self.gateway.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        pending = await database_sync_to_async(services.commands_pending_for_gateway)(
            gateway=self.gateway
        )
        for command in pending:
            await self.send(text_data=json.dumps(command))
        await database_sync_to_async(gateway_touch)(gateway=self.gateway)

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def gateway_commands(self, event):
        for command in event["commands"]:
            await self.send(text_data=json.dumps(command))

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
            kind = message["type"]
            tx_id = uuid.UUID(str(message["tx_id"]))
            machine = str(message["machine"])
        except (ValueError, KeyError, TypeError):
            await self._error("expected {type: ack|nack, tx_id: uuid, machine: code}")
            return
        if kind not in ("ack", "nack"):
            await self._error(f"unknown message type {kind!r}")
            return
        reason = str(message.get("reason") or "")[:150]
        await database_sync_to_async(services.command_answer)(
            gateway=self.gateway, tx_id=tx_id, machine_code=machine, ok=kind == "ack", reason=reason
        )

    async def _error(self, text: str):
        await self.send(text_data=json.dumps({"type": "error", "error": text}))
