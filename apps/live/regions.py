"""Render every live region of a topic, once, for all of its subscribers.

Each region is the same template partial the full page renders inline;
the returned mapping is region id -> (html, audience), where audience is
the line code a subscriber must be allowed to see (None: everyone on the
topic may).

The live layer imports no other app of the project at module import time:
it reads through their selectors (the UI side's for the plant's views,
workbooks' for an upload) inside the functions that render, so importing
`apps.live` never drags in the apps that announce through `push`.
"""

from django.template.loader import render_to_string
from django.utils import timezone

from .topics import Topic

Regions = dict[str, tuple[str, str | None]]


def render_topic(topic: Topic) -> Regions:
    now = timezone.now()
    return _RENDERERS[topic.kind](topic, now)


def machines_and_lines(machine_ids) -> tuple[list[str], list[str]]:
    """The codes of these machines and of their lines, for the hub to mark feeds."""
    from apps.plant.models import Machine

    machines = Machine.objects.filter(pk__in_array=list(machine_ids))
    pairs = list(machines.values_list("code", "line__code"))
    return [code for code, _ in pairs], sorted({line for _, line in pairs})


def _global(topic: Topic, now) -> Regions:
    from apps.dashboard import selectors as dashboard
    from apps.plant.models import Line

    cards = dashboard.plant_overview(lines=list(Line.objects.all()), now=now)
    return {
        f"line-card-{card.line.code}": (
            render_to_string("dashboard/overview.html#line_card", {"kpis": card}),
            card.line.code,
        )
        for card in cards
    }


def _line(topic: Topic, now) -> Regions:
    from apps.dashboard import selectors as dashboard
    from apps.plant.models import Line

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
    from apps.dashboard import selectors as dashboard
    from apps.plant.models import Machine

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
    from apps.dashboard import selectors as dashboard
    from apps.plant.models import Machine

    machine = Machine.objects.select_related("line").filter(code=topic.key).first()
    if machine is None:
        return {}
    chart = dashboard.sensor_chart(machine=machine, key=topic.sensor, now=now)
    html = render_to_string(
        "dashboard/machine.html#sensor_chart", {"chart": chart, "machine": machine}
    )
    return {f"chart-{machine.code.replace(':', '')}": (html, None)}


def _upload(topic: Topic, now) -> Regions:
    from apps.workbooks.live import upload_regions

    return upload_regions(topic.key)


_RENDERERS = {
    "global": _global,
    "line": _line,
    "machine": _machine,
    "chart": _chart,
    "upload": _upload,
}
