import re

import pytest

from apps.edge.queue import OfflineQueue
from apps.edge.simulator import Window

from .fake_server import FakeTelemetryServer
from .support import fill


def drain(agent, limit=100):
    for _ in range(limit):
        if agent.send_once() is None:
            return
    raise AssertionError("queue never drained")


def test_it_removes_a_batch_only_after_the_server_took_it(server, make_agent):
    agent = make_agent(server.url)
    (batch_id,) = fill(agent, 1)
    server.answer(500, {"error": "database is down"})
    assert agent.send_once() > 0
    assert [b.batch_id for b in agent.queue.oldest()] == [batch_id]
    assert agent.queue.oldest()[0].attempts == 1
    drain(agent)
    assert agent.queue.depth() == 0
    assert server.sent_batch_ids == [batch_id, batch_id]
    assert agent.counters.accepted_frames == 2


def test_it_retries_server_errors_with_growing_backoff(server, make_agent):
    agent = make_agent(server.url)
    fill(agent, 2)
    server.answer(503, times=4)
    delays = [agent.send_once() for _ in range(4)]
    assert all(0 < d <= 0.05 for d in delays)
    assert delays[2] > delays[0]
    assert agent.counters.retries == 4
    drain(agent)
    assert server.sent_batch_ids == ["gw-7:000001"] * 5 + ["gw-7:000002"]


def test_it_retries_while_the_server_is_unreachable(down_url, make_agent):
    agent = make_agent(down_url)
    fill(agent, 3)
    for _ in range(3):
        assert agent.send_once() > 0
    assert agent.queue.depth() == 3 and agent.counters.retries == 3


def test_it_honours_retry_after(server, make_agent, caplog):
    agent = make_agent(server.url)
    fill(agent, 2)
    server.answer(429, {"error": "slow down"}, {"Retry-After": "7"})
    assert agent.send_once() == 7.0
    assert server.sent_batch_ids == ["gw-7:000001"]  # the next batch did not overtake it
    assert agent.queue.depth() == 2
    assert "throttled gw-7:000001 (429): waiting 7.0s" in caplog.text
    drain(agent)
    assert server.sent_batch_ids == ["gw-7:000001", "gw-7:000001", "gw-7:000002"]


def test_it_quarantines_a_rejected_batch_and_never_sends_it_again(server, make_agent):
    agent = make_agent(server.url)
    first, second = fill(agent, 2)
    server.answer(400, {"error": "frame 0: unknown status"})
    drain(agent)
    assert server.sent_batch_ids == [first, second]
    assert agent.counters.quarantined_batches == 1
    (row,) = agent.queue.quarantined()
    assert (row.batch_id, row.status) == (first, 400)
    assert "unknown status" in row.error
    fill(agent, 1)
    drain(agent)
    assert first not in server.sent_batch_ids[2:]


@pytest.mark.parametrize("status", [403, 413])
def test_it_quarantines_other_rejections(server, make_agent, status):
    agent = make_agent(server.url)
    fill(agent, 1)
    server.answer(status, {"error": "no"})
    drain(agent)
    assert agent.queue.stats()["quarantined_batches"] == 1


def test_it_stops_sending_but_keeps_queuing_on_401(server, make_agent, caplog):
    agent = make_agent(server.url, auth_wait=5)
    fill(agent, 2)
    server.answer(401, {"error": "token revoked"})
    assert agent.send_once() == 5
    assert agent.auth_failed
    assert "SERVER REFUSED THE GATEWAY TOKEN (401)" in caplog.text
    fill(agent, 2)
    assert agent.send_once() == 5
    assert server.sent_batch_ids == ["gw-7:000001"]
    assert agent.queue.depth() == 4


def test_it_drains_oldest_first_and_shows_progress(make_agent):
    lines = []
    with FakeTelemetryServer() as server:
        agent = make_agent(
            server.url, lines=lines, drain_chunk=5, progress_every=0, progress_threshold=5
        )
        server.stop()
        queued = fill(agent, 30)
        assert agent.send_once() > 0
        server.start()  # the link is back
        drain(agent)
    # Nothing reached the server while it was down; then every batch in order, once.
    assert server.sent_batch_ids == queued
    assert list(server.stored) == queued
    progress = [re.fullmatch(r"draining: (\d+)/30 batches, \d+/s, eta \d+s", x) for x in lines]
    assert all(progress[:-1]), lines
    assert [int(m[1]) for m in progress[:-1]] == list(range(2, 30))
    assert re.fullmatch(r"drained: 30 batches in [\d.]+s, \d+/s", lines[-1])


def test_it_delivers_a_queue_left_by_an_earlier_run(queue_path, make_agent, server, down_url):
    first = make_agent(down_url)
    queued = fill(first, 5)
    assert first.send_once() > 0
    first.queue.close()

    second = make_agent(server.url)
    assert second.queue.depth() == 5
    assert second.produce_once(99) == ["gw-7:000006"]
    drain(second)
    assert server.sent_batch_ids == [*queued, "gw-7:000006"]


def test_it_counts_frames_refused_by_a_full_queue(down_url, make_agent, caplog):
    agent = make_agent(down_url, max_rows=3)
    fill(agent, 5)
    assert agent.queue.depth() == 3
    assert agent.counters.dropped_frames == 4  # two machines, two refused batches
    assert agent.queue.stats()["dropped_frames"] == 4
    assert "DROPPING DATA" in caplog.text


def test_it_keeps_sampling_through_an_outage_and_delivers_everything_once(make_agent):
    """Threads, real time: the link is down for the first 0.6 s of 1.5 s at 20 Hz."""
    lines = []
    with FakeTelemetryServer() as server:
        agent = make_agent(
            server.url,
            lines=lines,
            rate=20,
            link_offline=[Window.parse_link("0.6")],
            progress_every=0,
        )
        counters = agent.run(duration=1.5, drain_timeout=10)
    assert counters.produced_batches == 30
    assert counters.produced_frames == 60
    assert agent.queue.depth() == 0
    assert server.stored_frames == 60 == counters.accepted_frames
    assert list(server.stored) == [f"gw-7:{n:06d}" for n in range(1, 31)]
    assert counters.retries >= 1
    assert any(line.startswith("drained: ") for line in lines)


def test_it_stops_promptly_and_keeps_the_queue(down_url, make_agent, queue_path):
    import threading

    agent = make_agent(down_url, rate=50)
    threading.Timer(0.3, agent.stop).start()
    counters = agent.run(duration=30, drain_timeout=30)
    assert agent.halted
    assert 0 < counters.produced_batches < 100
    assert OfflineQueue(queue_path).depth() == counters.produced_batches
