"""The gateway against the real server: an outage, a lost acknowledgement,
and every frame stored exactly once."""

import os
import random
import signal
import threading
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command

from apps.edge.agent import Agent
from apps.edge.plant import plant_fetch
from apps.edge.queue import OfflineQueue
from apps.edge.sender import Answer, Backoff, HttpSender, Outcome
from apps.edge.simulator import Fault, Simulator, Window
from apps.plant.services import gateway_issue
from apps.telemetry.models import MachineFrame, TelemetryBatch
from tests.support.processes import daphne_server, free_port


class AckLosingSender:
    """Delivers every batch but loses the server's answer to the third one,
    as a dropped connection would: the agent must send it again."""

    def __init__(self, inner: HttpSender):
        self.inner = inner
        self.calls = 0

    def send(self, body: bytes) -> Answer:
        answer = self.inner.send(body)
        self.calls += 1
        if self.calls == 3 and answer.outcome is Outcome.ACCEPTED:
            return Answer(Outcome.RETRY, body="answer lost (simulated)")
        return answer


@pytest.mark.django_db(transaction=True)
def test_it_delivers_every_frame_exactly_once_after_an_outage(plant, tmp_path):
    machines = [plant.machines["m:401"], plant.machines["m:402"]]
    gateway, token = gateway_issue(name="edge-it", machines=machines)
    lines = []
    with daphne_server() as (url, _proc):
        bound = plant_fetch(url, token)
        assert bound.name == "edge-it" and sorted(bound.machine_sensors) == ["m:401", "m:402"]
        sender = AckLosingSender(HttpSender(url, token, timeout=10))
        queue = OfflineQueue(tmp_path / "edge-it.sqlite3")
        agent = Agent(
            name=bound.name,
            simulator=Simulator.build(
                bound.machine_sensors,
                started_at=datetime.now(UTC),
                seed=5,
                faults=[Fault.parse("m:402:EMERGENCY_STOP@1")],
            ),
            queue=queue,
            sender=sender,
            rate=10,
            # The server is unreachable for the first 1.2 s of the 2.5 s run.
            link_offline=[Window.parse_link("1.2")],
            backoff=Backoff(base=0.05, cap=0.2, rng=random.Random(1)),
            out=lines.append,
            progress_every=0,
        )
        counters = agent.run(duration=2.5, drain_timeout=30)
        sender.inner.close()
    assert queue.depth() == 0 and queue.stats()["quarantined_batches"] == 0
    queue.close()

    assert counters.produced_batches == 25
    assert counters.produced_frames == 50
    assert counters.retries >= 2  # the outage, then the lost answer
    assert counters.duplicate_batches == 1  # the batch whose answer was lost
    assert TelemetryBatch.objects.filter(gateway=gateway).count() == 25
    frames = MachineFrame.objects.filter(machine_id__in=[m.pk for m in machines])
    assert frames.count() == 50
    assert frames.values("machine_id", "ts").distinct().count() == 50
    assert set(frames.values_list("status", flat=True)) == {"RUNNING", "EMERGENCY_STOP"}
    sample = frames.filter(machine_id=machines[0].pk).order_by("ts").last()
    assert set(sample.readings) == {spec.key for spec in bound.machine_sensors["m:401"]}
    assert any(line.startswith("drained: ") for line in lines)


@pytest.mark.django_db(transaction=True)
def test_it_records_through_a_reboot_during_an_outage_and_delivers_once(plant, tmp_path):
    """The gateway learns its plant, the server goes down, the gateway
    restarts from its cached plant and records; the server comes back and
    holds every frame once."""
    machine = plant.machines["m:401"]
    gateway, token = gateway_issue(name="edge-reboot", machines=[machine])
    port = free_port()
    queue = tmp_path / "edge-reboot.sqlite3"

    def run_gateway(duration: str, drain_timeout: str = "30") -> str:
        out = StringIO()
        call_command(
            "run_gateway",
            *("--token", token, "--server", f"http://127.0.0.1:{port}", "--queue", str(queue)),
            *("--rate", "10", "--no-commands", "--backoff-cap", "0.05", "--seed", "3"),
            *("--duration", duration, "--drain-timeout", drain_timeout),
            stdout=out,
            stderr=StringIO(),
        )
        return out.getvalue()

    with daphne_server(port):
        assert "plant from the server" in run_gateway("0.2")
    # A gateway that waits for the server instead is stopped (SIGTERM) after 20 s, and fails.
    rescue = threading.Timer(20, os.kill, (os.getpid(), signal.SIGTERM))
    rescue.start()
    try:
        out = run_gateway("0.5", drain_timeout="0.2")
    finally:
        rescue.cancel()
    assert "plant from the cache of" in out and "5 batches still queued" in out
    with daphne_server(port):
        out = run_gateway("0.2")
    assert "0 batches still queued" in out

    assert TelemetryBatch.objects.filter(gateway=gateway).count() == 9
    frames = MachineFrame.objects.filter(machine_id=machine.pk)
    assert frames.count() == 9
    assert frames.values("ts").distinct().count() == 9
