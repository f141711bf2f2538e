import random

from apps.edge.queue import encode_batch
from apps.edge.sender import Backoff, HttpSender, Outcome, classify, parse_retry_after


def test_it_classifies_the_answers_of_the_contract():
    assert classify(202, '{"accepted": 2, "duplicate": false}').outcome is Outcome.ACCEPTED
    assert classify(202, '{"accepted": 2, "duplicate": true}').duplicate
    assert classify(429, "{}", "3").retry_after == 3.0
    assert classify(401, "{}").outcome is Outcome.UNAUTHORIZED
    for status in (400, 403, 413):
        assert classify(status, "{}").outcome is Outcome.REJECTED
    # Not the batch's fault: a missing endpoint or a sick server is retried.
    for status in (404, 500, 502, 503):
        assert classify(status, "").outcome is Outcome.RETRY


def test_it_reads_retry_after_as_seconds_or_a_date():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Mon, 23 Nov 2026 10:00:30 GMT", now=1795428000.0) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_it_backs_off_exponentially_with_jitter_up_to_a_cap():
    backoff = Backoff(base=1, cap=8, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    for n, delay in enumerate(delays):
        ceiling = min(8, 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 8
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_it_posts_gzip_json_with_the_bearer_token(server):
    sender = HttpSender(server.url, "fo_secret")
    answer = sender.send(encode_batch("gw-7:000001", [{"machine": "m:401"}]))
    sender.close()
    assert answer.outcome is Outcome.ACCEPTED and answer.status == 202
    assert server.requests == [{"batch_id": "gw-7:000001", "frames": [{"machine": "m:401"}]}]
    headers = server.headers[0]
    assert headers["Authorization"] == "Bearer fo_secret"
    assert headers["Content-Encoding"] == "gzip"


def test_it_reports_a_closed_port_as_retryable(down_url):
    answer = HttpSender(down_url, "fo_secret", timeout=1).send(encode_batch("gw-7:1", []))
    assert answer.outcome is Outcome.RETRY and answer.status is None
    assert "ConnectionRefused" in answer.body
