"""Overview chips are re-rendered only every few seconds; each tells the
browser how much longer than the staleness limit it may go unrendered."""

import re

import pytest

from apps.live.topics import GLOBAL, parse

pytestmark = pytest.mark.django_db


def test_every_overview_chip_carries_the_overview_refresh_as_stale_grace(client, operator1):
    client.force_login(operator1)
    html = client.get("/").content.decode()
    chips = re.findall(r'<li class="chip[^>]*>', html)
    assert chips
    grace = f'data-stale-grace="{parse(GLOBAL).sweep}"'
    assert all(grace in chip and "data-seen-at=" in chip for chip in chips)
