"""Threshold alerts for many machines at once, for pages and live ticks.

A line tick renders every machine of the line each second, so this reads
the latest values of all of them in one query and the thresholds in
another, however many machines there are.
"""

from datetime import datetime

from django.utils import timezone

from .models import RETENTION, MachineLatest
from .selectors import _alerts, _latest_readings, _thresholds


def alerts_by_machine(*, machine_ids: list[int], now: datetime | None = None) -> dict[int, list]:
    """machine id -> its alerts (sensors outside their thresholds); machines
    without any are left out."""
    now = now or timezone.now()
    if not machine_ids:
        return {}
    oldest = now - RETENTION
    thresholds = _thresholds(machine_ids)
    found = {}
    for latest in MachineLatest.objects.filter(machine_id__in=machine_ids).only(
        "machine_id", "readings"
    ):
        limits = thresholds.get(latest.machine_id)
        if not limits:
            continue
        alerts = _alerts(_latest_readings(latest, oldest=oldest), limits)
        if alerts:
            found[latest.machine_id] = alerts
    return found


def machine_ids_with_alerts(*, machine_ids: list[int], now: datetime | None = None) -> list[int]:
    return list(alerts_by_machine(machine_ids=machine_ids, now=now))
