"""Reads of telemetry: latest state with ages, staleness, threshold alerts
of one machine (of many at once: alerts.py) and chart series.

Nothing older than `RETENTION` (24 h) is ever returned, whether or not
the prune task has run yet: every query here filters by time as well.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import FloatField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from apps.plant.models import Gateway, Machine, Sensor

from .models import RETENTION, MachineFrame, MachineLatest

STALE_AFTER = timedelta(seconds=5)
DEFAULT_CHART_WINDOW = timedelta(hours=1)
DEFAULT_CHART_POINTS = 300
LATEST_FIELDS = ("status", "speed", "target_speed", "mode")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _dated(value, ts: datetime | None, *, now: datetime, oldest: datetime) -> dict:
    if ts is None or ts < oldest:
        return {"value": None, "ts": None, "age_s": None}
    return {"value": value, "ts": ts, "age_s": round(max(0.0, (now - ts).total_seconds()), 3)}


def machine_is_stale(*, machine: Machine, now: datetime | None = None) -> bool:
    """No frame received for the machine within STALE_AFTER (server clock)."""
    now = now or timezone.now()
    return machine.last_seen_at is None or now - machine.last_seen_at > STALE_AFTER


def gateway_may_read_machine(*, gateway: Gateway, machine: Machine) -> bool:
    return gateway.is_active and gateway.machines.filter(pk=machine.pk).exists()


def _latest_readings(latest: MachineLatest | None, *, oldest: datetime) -> dict[str, tuple]:
    """key -> (value, ts) of the latest readings still inside the window."""
    if latest is None:
        return {}
    floor = int((oldest - _EPOCH).total_seconds() * 1_000_000)
    return {
        key: (value, _from_micros(micros))
        for key, (value, micros) in sorted(latest.readings.items())
        if micros >= floor
    }


@dataclass(frozen=True, slots=True)
class _Threshold:
    low: float | None
    high: float | None


def _alerts(readings: dict[str, tuple], thresholds: dict[str, _Threshold]) -> list[dict]:
    alerts = []
    for key, (value, ts) in readings.items():
        limit = thresholds.get(key)
        if limit is None:
            continue
        if limit.high is not None and value > limit.high:
            alerts.append(
                {"sensor": key, "value": value, "ts": ts, "limit": "high", "threshold": limit.high}
            )
        elif limit.low is not None and value < limit.low:
            alerts.append(
                {"sensor": key, "value": value, "ts": ts, "limit": "low", "threshold": limit.low}
            )
    return alerts


def _thresholds(machine_ids) -> dict[int, dict[str, _Threshold]]:
    found: dict[int, dict[str, _Threshold]] = {}
    rows = (
        Sensor.objects.filter(machine_id__in=machine_ids)
        .exclude(low_alert__isnull=True, high_alert__isnull=True)
        .values_list("machine_id", "key", "low_alert", "high_alert")
    )
    for mid, key, low, high in rows:
        found.setdefault(mid, {})[key] = _Threshold(low, high)
    return found


def machine_latest(*, machine: Machine, now: datetime | None = None) -> dict:
    """The machine's latest reported state, each value with its ts (the
    time it counts from: its device ts, or the receive time when the device
    clock ran ahead) and its age in seconds; values older than the window
    read as null."""
    now = now or timezone.now()
    oldest = now - RETENTION
    latest = MachineLatest.objects.filter(machine=machine).first()
    readings = _latest_readings(latest, oldest=oldest)
    state = {"machine": machine.code, "line": machine.line.code}
    for name in LATEST_FIELDS:
        value = getattr(latest, name, None)
        state[name] = _dated(value, getattr(latest, f"{name}_ts", None), now=now, oldest=oldest)
    state["stale"] = machine_is_stale(machine=machine, now=now)
    state["last_seen_at"] = machine.last_seen_at
    state["alerts"] = _alerts(readings, _thresholds([machine.pk]).get(machine.pk, {}))
    state["readings"] = {
        key: _dated(value, ts, now=now, oldest=oldest) for key, (value, ts) in readings.items()
    }
    return state


def sensor_readings_downsampled(
    *,
    machine: Machine,
    key: str,
    start: datetime | None = None,
    end: datetime | None = None,
    points: int = DEFAULT_CHART_POINTS,
    now: datetime | None = None,
) -> list[tuple[datetime, float]]:
    """(ts, value) of one sensor for a chart, at most `points` of them
    (default: the last hour).

    Averaging would flatten a one-second spike into the noise, so the range
    is cut into points/2 buckets and each keeps its minimum and its maximum
    reading, in time order: the chart still shows every excursion.
    """
    now = now or timezone.now()
    end = end or now
    start = max(start or end - DEFAULT_CHART_WINDOW, now - RETENTION)
    if points < 1 or start > end:
        return []
    series = list(
        MachineFrame.objects.filter(machine=machine, ts__gte=start, ts__lte=end)
        .annotate(value=Cast(KeyTextTransform(key, "readings"), FloatField()))
        .filter(value__isnull=False)
        .order_by("ts")
        .values_list("ts", "value")
    )
    if len(series) <= points:
        return series
    if points == 1:
        return [max(series, key=lambda p: p[1])]
    buckets = points // 2
    width = (end - start) / buckets
    picked: list[tuple[datetime, float]] = []
    current, low, high = None, None, None
    for point in series:
        index = min(buckets - 1, int((point[0] - start) / width)) if width else 0
        if index != current:
            if current is not None:
                picked.extend(sorted({low, high}))
            current, low, high = index, point, point
            continue
        if point[1] < low[1]:
            low = point
        if point[1] > high[1]:
            high = point
    picked.extend(sorted({low, high}))
    return picked
