from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone

from apps.telemetry.services import telemetry_prune_if_due


def test_it_prunes_once_per_five_minutes_whoever_asks(db):
    cache.delete("telemetry:prune-due")
    now = timezone.now()
    assert telemetry_prune_if_due(now=now) is not None
    assert telemetry_prune_if_due(now=now + timedelta(seconds=10)) is None
    cache.delete("telemetry:prune-due")  # the five minutes have passed
    assert telemetry_prune_if_due(now=now + timedelta(minutes=6)) is not None
