"""The gateway against the real server's `/ws/gateway/`: an operator's setpoint
reaches the simulated machine, is acknowledged (the lock goes confirmed) and
is reconciled once the machine's telemetry reports the new target speed."""

import random
import threading
import time
from datetime import UTC, datetime

import pytest
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.control.models import ControlTransaction, PendingLock
from apps.control.services import setpoint_request
from apps.edge.agent import Agent
from apps.edge.commands import CommandChannel
from apps.edge.plant import PlantError, plant_fetch
from apps.edge.queue import OfflineQueue
from apps.edge.sender import Backoff, HttpSender
from apps.edge.simulator import Simulator
from apps.plant.models import Machine
from apps.plant.services import gateway_issue
from tests.support.processes import daphne_server


def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_it_applies_an_operator_setpoint_from_the_real_server(plant, operator1, tmp_path):
    m401 = plant.machines["m:401"]
    gateway, token = gateway_issue(name="edge-cmd", machines=[m401, plant.machines["m:402"]])
    # With the in-memory channel layer (embedded profile) this process cannot
    # reach daphne's consumers: the command then goes out as a pending one
    # when the gateway connects. With Redis it is pushed to the open socket.
    live_push = "InMemory" not in settings.CHANNEL_LAYERS["default"]["BACKEND"]

    lines = []
    with daphne_server() as (url, _proc):
        with pytest.raises(PlantError, match="refused the gateway token"):
            plant_fetch(url, "fo_not-a-token")
        bound = plant_fetch(url, token)
        simulator = Simulator.build(bound.machine_sensors, started_at=datetime.now(UTC), seed=3)
        simulator.set_target_speed("m:401", 1500)  # whatever the seed chose: not 1200

        refused = CommandChannel(url, "fo_not-a-token", auth_wait=30, open_timeout=5)
        refused.start(None)
        until(lambda: refused.auth_failed, 10, "the unknown token to be refused")
        refused.stop()

        queue = OfflineQueue(tmp_path / "edge-cmd.sqlite3")
        sender = HttpSender(url, token, timeout=10)
        channel = CommandChannel(
            url, token, poll=0.05, backoff=Backoff(base=0.05, cap=0.2, rng=random.Random(1))
        )
        agent = Agent(
            name=bound.name,
            simulator=simulator,
            queue=queue,
            sender=sender,
            rate=10,
            backoff=Backoff(base=0.05, cap=0.2, rng=random.Random(1)),
            out=lines.append,
            progress_every=0,
            channels=[channel],
        )
        tx = None
        if not live_push:
            tx = setpoint_request(actor=operator1, machine=m401, changes={"target_speed": 1200})
        runner = threading.Thread(
            target=agent.run, kwargs={"duration": 60, "drain_timeout": 5}, daemon=True
        )
        runner.start()
        try:
            assert channel.connected.wait(10), lines
            if live_push:
                # Telemetry flows first, so the lock records what the machine ran at.
                until(lambda: Machine.objects.get(pk=m401.pk).target_speed, 10, "frames")
                tx = setpoint_request(actor=operator1, machine=m401, changes={"target_speed": 1200})
            lock = PendingLock.objects.get(tx=tx, machine=m401, field="target_speed")
            until(
                lambda: PendingLock.objects.get(pk=lock.pk).state == "reconciled",
                9,
                "the lock to be reconciled",
            )
        finally:
            agent.stop()
            runner.join(15)
            sender.close()
            queue.close()
    assert not runner.is_alive()

    lock.refresh_from_db()
    assert lock.confirmed_at is not None and lock.confirmed_at <= lock.resolved_at
    assert ControlTransaction.objects.get(pk=tx.pk).status == "reconciled"
    actions = list(AuditEvent.objects.filter(tx_id=tx.tx_id).order_by("at", "pk"))
    assert [e.action for e in actions] == ["setpoint_request", "command_ack", "lock_reconciled"]
    m401.refresh_from_db()
    assert m401.target_speed == 1200
    assert simulator.by_code["m:401"].target_speed == 1200
    assert channel.counters.applied == 1 and channel.counters.refused == 0
    assert f"command {tx.tx_id} m:401 target_speed=1200: applied" in lines
