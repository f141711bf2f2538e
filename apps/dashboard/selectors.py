"""What the plant pages show: one builder per live region, used alike by
the full page, HTMX partial responses and WebSocket pushes.

These read plant truth and telemetry (and, later, pending setpoints) and
turn them into plain view objects; templates only format them.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime

from django.core.paginator import Paginator
from django.db.models import Q
from django.utils import timezone

from apps.control import selectors as control
from apps.control.merge import FieldView
from apps.plant import selectors as plant
from apps.plant.models import Line, Machine, Sensor
from apps.telemetry import alerts as telemetry_alerts
from apps.telemetry import selectors as telemetry

# A machine row's alert badge names this many alerts in its tooltip (the
# machine page lists them all). A row is rendered every second for every
# machine of the line; naming fifty alerts cost more than the rest of it.
ALERTS_NAMED = 5


@dataclass(slots=True)
class MachineView:
    machine: Machine
    status: str
    is_critical: bool
    stale: bool
    alerts: list[dict] = field(default_factory=list)
    # Setpoints as shown: truth, or a pending value with its style.
    target_speed: FieldView = FieldView(None)
    mode: FieldView = FieldView(None)

    @property
    def code(self) -> str:
        return self.machine.code

    @property
    def slug(self) -> str:
        return self.machine.code.replace(":", "")

    @property
    def status_class(self) -> str:
        return self.status.lower()

    @property
    def alerts_named(self) -> list[dict]:
        return self.alerts[:ALERTS_NAMED]

    @property
    def alerts_unnamed(self) -> int:
        return max(len(self.alerts) - ALERTS_NAMED, 0)


def machine_views(*, machines: list[Machine], now: datetime | None = None) -> list[MachineView]:
    """The merged view of each machine, in the order given; a fixed number
    of queries whatever the count."""
    now = now or timezone.now()
    critical = plant.critical_status_codes()
    ids = [m.pk for m in machines]
    alerts = telemetry_alerts.alerts_by_machine(machine_ids=ids, now=now)
    locks = control.locks_for_machines(machine_ids=ids, now=now)
    views = []
    for machine in machines:
        status = machine.display_status
        fields = control.machine_view_fields(
            machine=machine, locks=locks.get(machine.pk, []), now=now, critical=critical
        )
        views.append(
            MachineView(
                machine=machine,
                status=status,
                is_critical=status in critical,
                stale=telemetry.machine_is_stale(machine=machine, now=now),
                alerts=alerts.get(machine.pk, []),
                target_speed=fields["target_speed"],
                mode=fields["mode"],
            )
        )
    return views


@dataclass(slots=True)
class LineKpis:
    line: Line
    machines: int = 0
    running: int = 0
    stopped: int = 0
    critical: int = 0
    stale: int = 0
    with_alerts: int = 0
    mean_speed: float | None = None
    views: list[MachineView] = field(default_factory=list)


def line_kpis(*, line: Line, views: list[MachineView]) -> LineKpis:
    kpis = LineKpis(line=line, machines=len(views), views=views)
    speeds = []
    for view in views:
        kpis.running += view.status == "RUNNING"
        kpis.stopped += view.status in ("STOPPED", "IDLE")
        kpis.critical += view.is_critical
        kpis.stale += view.stale
        kpis.with_alerts += bool(view.alerts)
        if view.machine.speed is not None and not view.stale:
            speeds.append(view.machine.speed)
    kpis.mean_speed = round(sum(speeds) / len(speeds), 1) if speeds else None
    return kpis


def line_page(*, line: Line, now: datetime | None = None) -> dict:
    machines = list(Machine.objects.filter(line=line).select_related("line").order_by("code"))
    views = machine_views(machines=machines, now=now)
    return {"line": line, "views": views, "kpis": line_kpis(line=line, views=views)}


def plant_overview(*, lines: list[Line], now: datetime | None = None) -> list[LineKpis]:
    """KPIs of each line, with its machine views (for the chips)."""
    machines = list(
        Machine.objects.filter(line__in=lines).select_related("line").order_by("line", "code")
    )
    views = machine_views(machines=machines, now=now)
    by_line: dict[int, list[MachineView]] = {line.pk: [] for line in lines}
    for view in views:
        by_line[view.machine.line_id].append(view)
    cards = []
    for line in lines:
        cards.append(line_kpis(line=line, views=by_line[line.pk]))
    return cards


_FAMILY_RE = re.compile(r"^([a-z]+)")


@dataclass(slots=True)
class SensorView:
    sensor: Sensor
    value: float | None
    ts: datetime | None
    in_alert: bool


@dataclass(slots=True)
class SensorGroup:
    key: str
    label: str
    sensors: list[SensorView]


def machine_page(*, machine: Machine, now: datetime | None = None) -> dict:
    """Header view and every sensor with its latest value, grouped by
    family (temp, vibration, ...) so 100+ sensors stay readable."""
    now = now or timezone.now()
    view = machine_views(machines=[machine], now=now)[0]
    latest = telemetry.machine_latest(machine=machine, now=now)
    alerting = {a["sensor"] for a in view.alerts}
    groups: dict[str, SensorGroup] = {}
    for sensor in machine.sensors.order_by("key"):
        family = _FAMILY_RE.match(sensor.key).group(1)
        reading = latest["readings"].get(sensor.key) or {}
        group = groups.setdefault(
            family, SensorGroup(key=family, label=sensor.label.rstrip(" 0123456789"), sensors=[])
        )
        group.sensors.append(
            SensorView(
                sensor=sensor,
                value=reading.get("value"),
                ts=reading.get("ts"),
                in_alert=sensor.key in alerting,
            )
        )
    return {"machine": machine, "view": view, "groups": list(groups.values()), "latest": latest}


@dataclass(slots=True)
class Chart:
    machine: Machine
    sensor: Sensor
    points: str  # SVG polyline points
    low: float | None
    high: float | None
    count: int
    width: int = 720
    height: int = 180


def sensor_chart(*, machine: Machine, key: str, now: datetime | None = None) -> Chart | None:
    """The last hour of one sensor as an SVG polyline (min and max per
    bucket, so a one-second spike is still drawn)."""
    now = now or timezone.now()
    sensor = machine.sensors.filter(key=key).first()
    if sensor is None:
        return None
    series = telemetry.sensor_readings_downsampled(machine=machine, key=key, now=now)
    chart = Chart(machine=machine, sensor=sensor, points="", low=None, high=None, count=len(series))
    if not series:
        return chart
    values = [v for _, v in series]
    chart.low, chart.high = min(values), max(values)
    span = (chart.high - chart.low) or 1.0
    start = (now - telemetry.DEFAULT_CHART_WINDOW).timestamp()
    width, height, pad = chart.width, chart.height, 6
    chart.points = " ".join(
        f"{(ts.timestamp() - start) / 3600 * width:.1f},"
        f"{pad + (height - 2 * pad) * (1 - (v - chart.low) / span):.1f}"
        for ts, v in series
    )
    return chart


def setpoint_form_context(
    *, user, line: Line | None = None, machine: Machine | None = None, values=None, **extra
) -> dict:
    """Context of the setpoint form: on a machine page the machine is fixed,
    on a line page the operator picks one of the line's machines."""
    if machine is not None:
        context = {"fixed_machine": machine, "context_name": "machine"}
    else:
        machines = plant.machine_list_for_user(user=user, line=line).order_by("code")
        context = {"setpoint_machines": machines, "context_name": "line"}
    return context | {"modes": Machine.Mode.values, "values": values or {}} | extra


def equipment_list(
    *,
    user,
    line: str = "",
    status: str = "",
    alerts: bool = False,
    q: str = "",
    page: int = 1,
    per_page: int = 50,
    now=None,
) -> dict:
    """The filtered equipment list. Filtering by line, status and text is
    done in the database; `alerts` needs the latest values, so it is
    applied to the (already narrowed) machines in one pass."""
    machines = plant.machine_list_for_user(user=user).order_by("line__display_order", "code")
    if line:
        machines = machines.filter(line__code=line)
    if status:
        # By the status shown: a locked-out machine is MAINTENANCE_LOCK whatever it reports.
        machines = machines.with_display_status().filter(display_status_code=status)
    if q:
        machines = machines.filter(Q(code__icontains=q) | Q(name__icontains=q))
    if alerts:
        ids = telemetry_alerts.machine_ids_with_alerts(
            machine_ids=list(machines.values_list("pk", flat=True)), now=now
        )
        machines = machines.filter(pk__in=ids)
    paginator = Paginator(machines, per_page)
    page_obj = paginator.get_page(page)
    return {"page": page_obj, "views": machine_views(machines=list(page_obj), now=now)}
