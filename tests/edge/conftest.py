import random

import pytest

from apps.edge.agent import Agent
from apps.edge.queue import OfflineQueue
from apps.edge.sender import Backoff, HttpSender
from apps.edge.simulator import Simulator

from .fake_server import FakeTelemetryServer
from .support import MACHINES, T0


@pytest.fixture
def server():
    with FakeTelemetryServer() as fake:
        yield fake


@pytest.fixture
def down_url():
    """A port nothing listens on: the server is unreachable."""
    return FakeTelemetryServer().url


@pytest.fixture
def queue_path(tmp_path):
    return tmp_path / "edge" / "gw-7.sqlite3"


@pytest.fixture
def make_agent(queue_path):
    """An agent on a real queue file and a real HTTP sender, with tiny backoffs."""
    made = []

    def make(url, *, lines=None, machines=None, max_rows=1000, **kwargs):
        queue = OfflineQueue(queue_path, max_rows=max_rows)
        sender = HttpSender(url, "fo_test-token", timeout=2)
        kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05, rng=random.Random(1)))
        kwargs.setdefault("out", lines.append if lines is not None else (lambda line: None))
        agent = Agent(
            name="gw-7",
            simulator=Simulator.build(machines or MACHINES, started_at=T0, seed=7),
            queue=queue,
            sender=sender,
            **kwargs,
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.sender.close()
        agent.queue.close()
