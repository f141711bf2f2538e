"""The machine row of the line view (also pushed live every second)."""

import re

import pytest
from django.template.loader import render_to_string

from apps.dashboard.selectors import ALERTS_NAMED, machine_views


def _alert(n: int) -> dict:
    return {"sensor": f"sensor_{n}", "value": 100.0 + n, "limit": "high", "threshold": 90.0}


@pytest.mark.parametrize("count", [1, ALERTS_NAMED, ALERTS_NAMED + 3])
def test_the_alert_badge_counts_every_alert_and_names_the_first_few(plant, count):
    view = machine_views(machines=[plant.machines["m:401"]])[0]
    view.alerts = [_alert(n) for n in range(count)]
    html = render_to_string("dashboard/_machine.html#machine_row", {"view": view})

    badge = re.search(r'<span class="badge alert" title="([^"]*)">([^<]*)</span>', html)
    assert badge, html
    title, text = badge.groups()
    assert text == f"{count} alert{'s' if count > 1 else ''}"
    named = min(count, ALERTS_NAMED)
    assert re.findall(r"sensor_\d+", title) == [f"sensor_{n}" for n in range(named)]
    assert "sensor_0 100.0 (high limit 90.0)" in title
    if count > ALERTS_NAMED:
        assert title.endswith(f", and {count - ALERTS_NAMED} more")
    else:
        assert "more" not in title
