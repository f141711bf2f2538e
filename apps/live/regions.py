"""Render every live region of a topic, once, for all of its subscribers.

Each region is the same template partial the full page renders inline;
the returned mapping is region id -> (html, audience), where audience is
the line code a subscriber must be allowed to see (None: everyone on the
topic may).
"""

from django.template.loader import render_to_string
from django.utils import timezone

from apps.dashboard import selectors as dashboard
from apps.plant.models import Line, Machine
from apps.workbooks.live import upload_regions

from .topics import Topic

Regions = dict[str, tuple[str, str | None]]


def render_topic(topic: Topic) -> Regions:
    now = timezone.now()
    return _RENDERERS[topic.kind](topic, now)


def _global(topic: Topic, now) -> Regions:
    cards = dashboard.plant_overview(lines=list(Line.objects.all()), now=now)
    return {
        f"line-card-{card.line.code}": (
            render_to_string("dashboard/overview.html#line_card", {"kpis": card}),
            card.line.code,
        )
        for card in cards
    }


def _line(topic: Topic, now) -> Regions:
    line = Line.objects.filter(code=topic.key).first()
    if line is None:
        return {}
    page = dashboard.line_page(line=line, now=now)
    regions = {
        f"line-kpis-{line.code}": (
            render_to_string("dashboard/line.html#line_kpis", {"kpis": page["kpis"]}),
            None,
        )
    }
    for view in page["views"]:
        regions[f"machine-row-{view.slug}"] = (
            render_to_string("dashboard/_machine.html#machine_row", {"view": view}),
            None,
        )
    return regions


def _machine(topic: Topic, now) -> Regions:
    machine = Machine.objects.select_related("line").filter(code=topic.key).first()
    if machine is None:
        return {}
    page = dashboard.machine_page(machine=machine, now=now)
    view = page["view"]
    regions = {
        f"machine-header-{view.slug}": (
            render_to_string("dashboard/machine.html#machine_header", {"view": view}),
            None,
        )
    }
    for group in page["groups"]:
        regions[f"sensors-{view.slug}-{group.key}"] = (
            render_to_string(
                "dashboard/machine.html#sensor_group", {"group": group, "machine": machine}
            ),
            None,
        )
    return regions


def _chart(topic: Topic, now) -> Regions:
    machine = Machine.objects.select_related("line").filter(code=topic.key).first()
    if machine is None:
        return {}
    chart = dashboard.sensor_chart(machine=machine, key=topic.sensor, now=now)
    html = render_to_string(
        "dashboard/machine.html#sensor_chart", {"chart": chart, "machine": machine}
    )
    return {f"chart-{machine.code.replace(':', '')}": (html, None)}


def _upload(topic: Topic, now) -> Regions:
    return upload_regions(topic.key)


_RENDERERS = {
    "global": _global,
    "line": _line,
    "machine": _machine,
    "chart": _chart,
    "upload": _upload,
}
