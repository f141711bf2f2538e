"""Frozen data must look frozen (the seed's first promise: nobody mistakes
old numbers for live ones), checked in Debian's Chromium.

The link is cut the way a cable or a Wi-Fi drop cuts it: the browser goes
offline (`context.set_offline`) and the open socket does not close, so
only the page's own clock can tell.
"""

import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from apps.plant.models import Machine
from tests.support.processes import daphne_server

from .test_live import Gateway, indicator, speed_cell, wait_live

pytestmark = pytest.mark.browser

WAIT = 10_000
PING_INTERVAL_S = 5  # the defaults the issue fixes: STALE after 5 s,
DEAD_AFTER_S = 13  # dead after 2 pings + the 3 s pong timeout


@pytest.fixture
def gateway(plant):
    from apps.plant.services import gateway_issue

    _gateway, token = gateway_issue(
        name="gw-frozen", machines=[m for m in plant.machines.values() if m.line.code == "01"]
    )
    return Gateway(token)


def band(page):
    return page.locator("#freshness-band")


def test_a_cut_network_turns_stale_then_disconnected_then_recovers_with_fresh_data(
    login, asgi_server, gateway
):
    page = login("operator1")
    page.goto(f"{asgi_server}/lines/01/")
    wait_live(page, "line:01")
    expect(band(page)).to_be_hidden()

    page.context.set_offline(True)
    cut = time.monotonic()
    # STALE: the whole page says so, not only the small indicator.
    expect(indicator(page)).to_have_attribute("data-connection-state", "stale", timeout=7_000)
    assert time.monotonic() - cut <= PING_INTERVAL_S + 1.0
    expect(band(page)).to_be_visible()
    expect(band(page)).to_have_text(re.compile(r"Data may be old — last update \d+ s ago"))
    expect(page.locator("body")).to_have_attribute("data-live", "stale")

    # No ping for two intervals and the pong timeout: the page closes the
    # socket itself and shows DISCONNECTED, desaturated.
    expect(indicator(page)).to_have_attribute(
        "data-connection-state", "disconnected", timeout=16_000
    )
    assert time.monotonic() - cut <= DEAD_AFTER_S + 1.5
    expect(page.locator("main")).to_have_css("filter", re.compile("grayscale"))
    expect(band(page)).to_have_text(re.compile(r"^Not live — Data may be old"))

    # The plant moves on meanwhile; the page must not pretend to know.
    gateway.send(asgi_server, status="RUNNING", speed=2718)
    time.sleep(max(0, 20 - (time.monotonic() - cut)))
    expect(speed_cell(page)).not_to_have_text("2718")
    page.context.set_offline(False)

    # The reconnect schedule brings it back (the 10 s attempt at the latest),
    # and the page stays desaturated until the fresh snapshot is applied.
    wait_live(page, "line:01", timeout=35_000)
    expect(speed_cell(page)).to_have_text("2718", timeout=WAIT)
    expect(page.locator("main")).to_have_css("filter", "none", timeout=WAIT)
    expect(band(page)).to_be_hidden()


def test_every_reconnect_attempt_keeps_the_page_desaturated_until_the_snapshot(login, asgi_server):
    page = login("operator1")
    page.goto(f"{asgi_server}/lines/01/")
    wait_live(page, "line:01")
    page.context.set_offline(True)
    expect(indicator(page)).to_have_attribute(
        "data-connection-state", "disconnected", timeout=16_000
    )
    # Attempts come and fail while offline; at no point is the page live.
    page.wait_for_function(
        "() => FleetOpsLive.log.filter(e => e.state === 'connecting').length >= 2",
        timeout=20_000,
    )
    states = page.evaluate("document.body.dataset.live")
    assert states == "down"
    page.context.set_offline(False)
    wait_live(page, "line:01", timeout=35_000)
    expect(page.locator("body")).to_have_attribute("data-live", "live", timeout=WAIT)


def test_ages_tick_in_the_browser_without_any_push(login, asgi_server, plant):
    seen = datetime.now(UTC) - timedelta(seconds=30)
    Machine.objects.filter(code="m:401").update(last_seen_at=seen)
    page = login("operator1")
    page.goto(f"{asgi_server}/machines/m:401/")
    wait_live(page, "m:401")
    age = page.locator("time.age").first
    expect(age).to_have_text(re.compile(r"^\d+ (s|min|h) ago$"), timeout=WAIT)
    first = age.text_content()
    # Nothing reports for m:401 in this test: only the page's clock moves it.
    expect(age).not_to_have_text(first, timeout=WAIT)


def test_send_without_a_connection_says_not_sent_in_the_form_and_a_toast(login, asgi_server):
    page = login("operator1")
    page.goto(f"{asgi_server}/machines/m:401/")
    wait_live(page, "m:401")
    page.context.set_offline(True)
    form = page.locator("#setpoint-form")
    form.locator("input[name=target_speed]").fill("1234")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-not-sent")).to_have_text(
        "Not sent: no connection to the server.", timeout=WAIT
    )
    expect(page.locator("#toasts .toast-error")).to_have_text(
        "Not sent: no connection to the server."
    )
    expect(form.locator(".form-sent")).to_have_count(0)
    page.context.set_offline(False)


def test_a_row_whose_data_ages_past_the_limit_turns_stale_with_the_server_frozen(
    open_page, transactional_db, plant
):
    """No push can arrive from a frozen (SIGSTOPped) server: only the
    page's own clock can mark the row, and it must."""
    Machine.objects.filter(code="m:401").update(last_seen_at=datetime.now(UTC))
    with daphne_server(LIVE_PONG_TIMEOUT=60) as (base_url, proc):
        page = open_page(base_url, "operator1", "/lines/01/")
        wait_live(page, "line:01")
        row = page.locator("#machine-row-m401")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            expect(row).to_have_class(re.compile(r"\bis-stale\b"), timeout=WAIT)
            age = row.locator("time.age")
            expect(age).to_have_text(re.compile(r"^([5-9]|\d\d+) s ago$"), timeout=WAIT)
        finally:
            os.kill(proc.pid, signal.SIGCONT)


def test_a_server_error_after_send_warns_the_change_may_have_been_made(login, asgi_server):
    """A 502 from the proxy, or a 500 after the change was committed: the
    form must not claim "not sent", or the operator sends it twice."""
    page = login("operator1")
    page.goto(f"{asgi_server}/machines/m:401/")
    wait_live(page, "m:401")
    page.route("**/control/setpoint/", lambda route: route.fulfill(status=502, body="Bad Gateway"))
    form = page.locator("#setpoint-form")
    form.locator("input[name=target_speed]").fill("1234")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-not-sent")).to_have_text(
        "The server answered 502. The change may have been made: "
        "check its pending value before sending again.",
        timeout=WAIT,
    )
    expect(form.locator(".form-sent")).to_have_count(0)
