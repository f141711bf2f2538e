"""The command channel against a fake `/ws/gateway/` server: setpoints applied
once, acknowledged, refused when they must be, and a socket that comes back."""

import gzip
import json
import logging
import random
import threading
import time

import pytest

from apps.edge.commands import CommandChannel, CommandMode, command_url
from apps.edge.sender import Backoff

from .fake_gateway import FakeGatewayServer
from .support import command

TOKEN = "fo_test-token"


@pytest.fixture
def gateway():
    with FakeGatewayServer() as fake:
        yield fake


@pytest.fixture
def start_channel(make_agent, down_url):
    """An agent (telemetry pointed nowhere) and its command channel, started."""
    started = []

    def start(server_url, *, agent=None, lines=None, connect=True, **kwargs):
        agent = agent or make_agent(down_url, lines=lines)
        kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05, rng=random.Random(2)))
        kwargs.setdefault("open_timeout", 2)
        kwargs.setdefault("poll", 0.05)
        channel = CommandChannel(server_url, TOKEN, **kwargs)
        channel.start(agent)
        started.append(channel)
        if connect:
            assert channel.connected.wait(5), "the command channel never connected"
        return agent, channel

    yield start
    for channel in started:
        channel.stop()


def eventually(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def settle(agent, seconds: float = 20) -> None:
    """Let every machine reach its setpoint."""
    agent.produce_once(agent.simulator.t + seconds)


def next_frame(agent, machine: str = "m:401", dt: float = 1.0) -> dict:
    """The frame of `machine` in the next batch the producer queues."""
    agent.produce_once(agent.simulator.t + dt)
    batch = agent.queue.oldest(10_000)[-1]
    frames = json.loads(gzip.decompress(batch.body))["frames"]
    return next(f for f in frames if f["machine"] == machine)


def test_it_maps_the_server_url_to_the_gateway_socket():
    assert command_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws/gateway/"
    assert command_url("https://plant.example/fleetops/") == (
        "wss://plant.example/fleetops/ws/gateway/"
    )
    with pytest.raises(ValueError, match="http"):
        command_url("ftp://plant")


def test_it_sends_the_token_on_the_handshake_and_no_origin(gateway, start_channel):
    _agent, channel = start_channel(gateway.url)
    (handshake,) = gateway.handshakes
    assert handshake["path"] == "/ws/gateway/"
    assert handshake["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "Origin" not in handshake["headers"]
    assert channel.counters.connections == 1


def test_it_applies_a_setpoint_and_the_next_frame_reports_it(gateway, start_channel):
    lines = []
    agent, channel = start_channel(gateway.url, lines=lines)
    settle(agent)
    before = next_frame(agent)
    assert before["speed"] == before["target_speed"] != 2100

    gateway.send(command("tx-1", target_speed=2100))
    assert gateway.answer_to("tx-1") == {"type": "ack", "tx_id": "tx-1", "machine": "m:401"}
    assert agent.simulator.by_code["m:401"].target_speed == 2100
    frame = next_frame(agent)
    assert frame["target_speed"] == 2100 and frame["mode"] == "RUN"
    # It ramps at the ramp rate (150 rpm/s), it does not jump.
    assert frame["speed"] == before["speed"] + 150
    assert next_frame(agent, "m:402")["target_speed"] != 2100  # only the machine addressed
    assert channel.counters.applied == 1
    assert "command tx-1 m:401 target_speed=2100: applied" in lines


def test_it_sets_the_mode_but_never_a_critical_status(gateway, start_channel):
    agent, _channel = start_channel(gateway.url)
    settle(agent)
    gateway.send(command("tx-idle", mode="IDLE"))
    assert gateway.answer_to("tx-idle")["type"] == "ack"
    frame = next_frame(agent)
    assert (frame["mode"], frame["status"]) == ("IDLE", "IDLE")

    gateway.send(command("tx-maint", mode="MAINTENANCE"))
    assert gateway.answer_to("tx-maint")["type"] == "ack"
    frame = next_frame(agent)
    assert (frame["mode"], frame["status"]) == ("MAINTENANCE", "STOPPED")

    gateway.send(command("tx-run", mode="RUN", target_speed=900))
    assert gateway.answer_to("tx-run")["type"] == "ack"
    frame = next_frame(agent, dt=20)
    assert (frame["mode"], frame["status"], frame["target_speed"]) == ("RUN", "RUNNING", 900)
    assert frame["speed"] == 900


def test_it_applies_a_duplicate_once_and_acknowledges_it_again(gateway, start_channel):
    agent, channel = start_channel(gateway.url)
    first = command("tx-1", target_speed=2000)
    gateway.send(first)
    assert gateway.answer_to("tx-1")["type"] == "ack"
    gateway.send(command("tx-2", target_speed=1000))
    assert gateway.answer_to("tx-2")["type"] == "ack"

    gateway.send(first)  # tx-1 again, e.g. the server re-sending after a lost ack
    assert gateway.answer_to("tx-1") == {"type": "ack", "tx_id": "tx-1", "machine": "m:401"}
    assert agent.simulator.by_code["m:401"].target_speed == 1000  # not put back to 2000
    assert (channel.counters.applied, channel.counters.duplicates) == (2, 1)

    # The same tx_id for another machine is another command.
    gateway.send(command("tx-1", "m:402", target_speed=2000))
    assert gateway.answer_to("tx-1", "m:402")["type"] == "ack"
    assert agent.simulator.by_code["m:402"].target_speed == 2000


def test_it_remembers_a_bounded_number_of_applied_commands(gateway, start_channel):
    agent, channel = start_channel(gateway.url, remember=3)
    for n in range(5):
        gateway.send(command(f"tx-{n}", target_speed=1000 + n))
        assert gateway.answer_to(f"tx-{n}")["type"] == "ack"
    assert list(channel._applied) == [(f"tx-{n}", "m:401") for n in (2, 3, 4)]


def test_it_never_applies_an_expired_command(gateway, start_channel):
    agent, channel = start_channel(gateway.url)
    target = agent.simulator.by_code["m:401"].target_speed
    gateway.send(command("tx-old", target_speed=2500, expires_in=-0.001))
    assert gateway.answer_to("tx-old") == {
        "type": "nack",
        "tx_id": "tx-old",
        "machine": "m:401",
        "reason": "expired",
    }
    assert agent.simulator.by_code["m:401"].target_speed == target
    assert next_frame(agent)["target_speed"] == target
    assert (channel.counters.expired, channel.counters.applied) == (1, 0)


def test_it_does_not_apply_a_command_that_expires_during_the_delay(gateway, start_channel):
    agent, _channel = start_channel(gateway.url, delay=0.4)
    target = agent.simulator.by_code["m:401"].target_speed
    sent = time.monotonic()
    gateway.send(command("tx-late", target_speed=2500, expires_in=0.2))
    gateway.send(command("tx-ok", target_speed=2400, expires_in=30))
    assert gateway.answer_to("tx-late")["reason"] == "expired"
    assert agent.simulator.by_code["m:401"].target_speed == target
    assert gateway.answer_to("tx-ok")["type"] == "ack"
    assert time.monotonic() - sent >= 0.8  # each one waited its delay
    assert agent.simulator.by_code["m:401"].target_speed == 2400


def test_it_rejects_every_command_in_reject_mode(gateway, start_channel):
    agent, channel = start_channel(gateway.url, mode=CommandMode.REJECT)
    target = agent.simulator.by_code["m:401"].target_speed
    gateway.send(command("tx-1", target_speed=2000))
    assert gateway.answer_to("tx-1") == {
        "type": "nack",
        "tx_id": "tx-1",
        "machine": "m:401",
        "reason": "rejected by gateway (test mode)",
    }
    assert agent.simulator.by_code["m:401"].target_speed == target
    assert channel.counters.refused == 1


def test_it_neither_applies_nor_answers_in_ignore_mode(gateway, start_channel):
    agent, channel = start_channel(gateway.url, mode="ignore")
    target = agent.simulator.by_code["m:401"].target_speed
    gateway.send(command("tx-1", target_speed=2000))
    gateway.send(command("tx-2", "m:402", mode="IDLE"))
    eventually(lambda: channel.counters.ignored == 2)
    time.sleep(0.2)
    assert gateway.received == []
    assert agent.simulator.by_code["m:401"].target_speed == target
    assert agent.simulator.by_code["m:402"].mode == "RUN"


@pytest.mark.parametrize(
    "status", ["EMERGENCY_STOP", "FAULT", "MAINTENANCE_LOCK", "SAFETY_INTERLOCK"]
)
def test_it_refuses_a_machine_held_by_its_safety_chain(gateway, start_channel, status):
    agent, _channel = start_channel(gateway.url)
    machine = agent.simulator.by_code["m:402"]
    machine.set_status(status)
    mode, target = machine.mode, machine.target_speed
    gateway.send(command("tx-1", "m:402", target_speed=2000, mode="RUN"))
    answer = gateway.answer_to("tx-1", "m:402")
    assert (answer["type"], answer["reason"]) == ("nack", f"machine in {status}")
    assert (machine.status, machine.mode, machine.target_speed) == (status, mode, target)


@pytest.mark.parametrize(
    "machine, changes, reason",
    [
        ("m:999", {"target_speed": 1000}, "machine m:999 not simulated by this gateway"),
        ("m:401", {"target_speed": 3001}, "invalid target_speed 3001"),
        ("m:401", {"target_speed": -1}, "invalid target_speed -1"),
        ("m:401", {"target_speed": "fast"}, "invalid target_speed 'fast'"),
        ("m:401", {"target_speed": True}, "invalid target_speed"),
        ("m:401", {"target_speed": None}, "invalid target_speed null"),
        ("m:401", {"mode": "TURBO"}, "invalid mode 'TURBO'"),
        ("m:401", {"mode": "RUN", "colour": "red"}, "unknown field(s) colour"),
        ("m:401", {}, "invalid set"),
    ],
)
def test_it_refuses_invalid_commands(gateway, start_channel, machine, changes, reason):
    agent, _channel = start_channel(gateway.url)
    before = {m.code: (m.target_speed, m.mode) for m in agent.simulator.machines}
    gateway.send(command("tx-bad", machine, **changes))
    answer = gateway.answer_to("tx-bad", machine)
    assert answer["type"] == "nack" and reason in answer["reason"], answer
    assert {m.code: (m.target_speed, m.mode) for m in agent.simulator.machines} == before


def test_it_refuses_a_command_without_a_valid_expiry(gateway, start_channel):
    _agent, _channel = start_channel(gateway.url)
    gateway.send({**command("tx-1", target_speed=1000), "expires_at": "tomorrow"})
    assert gateway.answer_to("tx-1")["reason"] == "invalid expires_at 'tomorrow'"


def test_it_logs_errors_and_survives_odd_messages(gateway, start_channel, caplog):
    _agent, channel = start_channel(gateway.url)
    gateway.send({"type": "error", "error": "unknown message type 'akc'"})
    gateway.send({"type": "hello"})
    gateway.send({"type": "command", "set": {"target_speed": 1}})  # no tx_id: nothing to answer
    gateway.send(command("tx-1", target_speed=1000))
    assert gateway.answer_to("tx-1")["type"] == "ack"
    assert channel.counters.server_errors == 1
    assert "the server reports an error: unknown message type 'akc'" in caplog.text
    assert "a command without tx_id/machine" in caplog.text
    assert [m["tx_id"] for m in gateway.received] == ["tx-1"]


def test_it_reconnects_after_the_server_drops_it_and_gets_resent_commands(gateway, start_channel):
    pending = command("tx-1", target_speed=2200)
    gateway.pending = [pending]  # re-sent on every connect, like the real server
    agent, channel = start_channel(gateway.url)
    assert gateway.answer_to("tx-1")["type"] == "ack"

    agent.simulator.set_target_speed("m:401", 1100)  # moved on since
    gateway.drop()
    gateway.wait_for(lambda: gateway.connections == 2, what="a reconnect")
    assert gateway.answer_to("tx-1")["type"] == "ack"  # acknowledged again...
    assert agent.simulator.by_code["m:401"].target_speed == 1100  # ...not applied again
    gateway.send(command("tx-2", target_speed=1300))
    assert gateway.answer_to("tx-2")["type"] == "ack"
    assert agent.simulator.by_code["m:401"].target_speed == 1300
    assert (channel.counters.connections, channel.counters.applied) == (2, 2)


def test_it_nacks_an_expired_command_resent_after_a_reconnect(gateway, start_channel):
    gateway.pending = [command("tx-1", target_speed=2200, expires_in=0.3)]
    agent, channel = start_channel(gateway.url, mode="ignore")  # as if the ack never came
    eventually(lambda: channel.counters.ignored == 1)
    channel.stop()
    time.sleep(0.35)
    channel.mode = CommandMode.APPLY
    channel.start(agent)  # the gateway restarted after the command ran out
    assert gateway.answer_to("tx-1")["reason"] == "expired"
    assert agent.simulator.by_code["m:401"].target_speed != 2200


def test_it_keeps_trying_slowly_when_the_token_is_refused(gateway, start_channel, caplog):
    gateway.refuse = 403
    agent, channel = start_channel(gateway.url, connect=False, auth_wait=0.2)
    gateway.wait_for(lambda: len(gateway.handshakes) >= 2, what="a second handshake")
    eventually(lambda: channel.auth_failed)
    assert not channel.connected.is_set()
    assert "SERVER REFUSED THE GATEWAY TOKEN ON THE COMMAND CHANNEL (403)" in caplog.text
    assert agent.produce_once(1)  # telemetry goes on
    time.sleep(0.1)
    assert len(gateway.handshakes) <= 3  # slowly: every auth_wait, not every backoff step

    gateway.refuse = None  # a new token was bound, say
    assert channel.connected.wait(5)
    assert not channel.auth_failed
    gateway.send(command("tx-1", target_speed=1000))
    assert gateway.answer_to("tx-1")["type"] == "ack"


def test_it_keeps_retrying_while_the_server_is_down(down_url, start_channel, caplog):
    caplog.set_level(logging.WARNING, logger="apps.edge.commands")
    _agent, channel = start_channel(down_url, connect=False)
    time.sleep(0.3)
    assert channel._thread.is_alive() and not channel.connected.is_set()
    assert channel.backoff.failures >= 2
    assert "reconnecting in" in caplog.text


def test_it_runs_beside_the_telemetry_loops_and_stops_cleanly(gateway, make_agent, server):
    """Threads, real time: the whole agent with its command channel."""
    agent = make_agent(server.url, rate=20)
    channel = CommandChannel(gateway.url, TOKEN, poll=0.05, open_timeout=2)
    agent.channels = [channel]

    def operator():
        eventually(lambda: server.stored)  # a frame or more with the old setpoint first
        gateway.send(command("tx-1", target_speed=2300))

    threading.Thread(target=operator, daemon=True).start()
    threading.Timer(1.0, agent.stop).start()
    started = time.monotonic()
    agent.run(duration=30, drain_timeout=5)
    assert time.monotonic() - started < 4
    assert not channel._thread.is_alive()
    gateway.wait_for(lambda: gateway.open_connections == 0, what="the hang-up")
    assert gateway.answer_to("tx-1")["type"] == "ack"
    frames = [f for frames in server.stored.values() for f in frames if f["machine"] == "m:401"]
    assert frames[-1]["target_speed"] == 2300
    assert frames[0]["target_speed"] != 2300
