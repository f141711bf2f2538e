import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.control import services
from apps.control.models import PendingLock
from apps.plant.models import Machine
from apps.plant.services import gateway_issue, gateway_revoke
from fleetops.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def gateway_socket(token):
    headers = [(b"host", b"127.0.0.1")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/gateway/", headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


@pytest.fixture
def token(plant):
    _gateway, token = gateway_issue(name="gw-ws", machines=[plant.machines["m:401"]])
    return token


@database_sync_to_async
def request(user, code, **changes):
    machine = Machine.objects.select_related("line").get(code=code)
    return services.setpoint_request(actor=user, machine=machine, changes=changes)


@database_sync_to_async
def lock_state(tx):
    return PendingLock.objects.get(tx=tx).state


async def test_it_refuses_a_missing_unknown_or_revoked_token(plant, token):
    for bad in [None, "fo_unknown"]:
        _communicator, connected = await gateway_socket(bad)
        assert not connected
    gateway = await database_sync_to_async(lambda: plant.machines["m:401"].gateways.get())()
    await database_sync_to_async(gateway_revoke)(gateway=gateway)
    _communicator, connected = await gateway_socket(token)
    assert not connected


async def test_a_setpoint_is_sent_to_the_gateway_which_acks(operator1, token):
    gateway, connected = await gateway_socket(token)
    assert connected
    tx = await request(operator1, "m:401", target_speed=1500, mode="RUN")
    command = json.loads(await gateway.receive_from(timeout=5))
    assert command["type"] == "command" and command["tx_id"] == str(tx.tx_id)
    assert command["machine"] == "m:401" and command["set"] == {"target_speed": 1500, "mode": "RUN"}
    assert command["expires_at"].endswith("Z")
    await gateway.send_to(
        text_data=json.dumps({"type": "ack", "tx_id": command["tx_id"], "machine": "m:401"})
    )
    await gateway.receive_nothing(timeout=0.3)
    assert await database_sync_to_async(
        lambda: set(PendingLock.objects.values_list("state", flat=True))
    )() == {"confirmed"}
    await gateway.disconnect()


async def test_a_nack_fails_the_lock(operator1, token):
    gateway, _ = await gateway_socket(token)
    tx = await request(operator1, "m:401", target_speed=2000)
    command = json.loads(await gateway.receive_from(timeout=5))
    await gateway.send_to(
        text_data=json.dumps(
            {"type": "nack", "tx_id": command["tx_id"], "machine": "m:401", "reason": "interlock"}
        )
    )
    await gateway.receive_nothing(timeout=0.3)
    assert await lock_state(tx) == "failed"
    await gateway.disconnect()


async def test_commands_issued_while_away_are_sent_on_connect(operator1, token):
    tx = await request(operator1, "m:401", target_speed=1100)
    gateway, _ = await gateway_socket(token)
    command = json.loads(await gateway.receive_from(timeout=5))
    assert command["tx_id"] == str(tx.tx_id)
    await gateway.disconnect()


async def test_bad_messages_get_an_error_and_change_nothing(operator1, token):
    gateway, _ = await gateway_socket(token)
    tx = await request(operator1, "m:401", target_speed=1300)
    await gateway.receive_from(timeout=5)
    for bad in [
        "nope",
        '{"type": "ack"}',
        '{"type": "ack", "tx_id": "x", "machine": "m:401"}',
        json.dumps({"type": "launch", "tx_id": str(tx.tx_id), "machine": "m:401"}),
    ]:
        await gateway.send_to(text_data=bad)
        assert json.loads(await gateway.receive_from(timeout=2))["type"] == "error"
    # An ack for a machine this gateway does not serve moves nothing.
    await gateway.send_to(
        text_data=json.dumps({"type": "ack", "tx_id": str(tx.tx_id), "machine": "m:402"})
    )
    await gateway.receive_nothing(timeout=0.3)
    assert await lock_state(tx) == "inflight"
    await gateway.disconnect()
