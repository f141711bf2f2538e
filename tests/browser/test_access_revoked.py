"""Who may watch is checked all the time, in Debian's Chromium: a logout in
another tab and a membership removed in the admin stop a page's data
within 2 s, and the page says why instead of reconnecting in a loop."""

import time

import pytest
from playwright.sync_api import expect

from apps.plant.models import LineMembership

from .test_live import indicator, wait_live

pytestmark = pytest.mark.browser

PROMPTLY_MS = 2_000  # the promise


class Sockets:
    """Every socket a page opens, and the frames each one received."""

    def __init__(self):
        self.opened = []
        self.frames = []  # (monotonic time, text)

    def __call__(self, ws):
        self.opened.append(ws)
        ws.on("framereceived", lambda payload: self.frames.append((time.monotonic(), payload)))

    def received_since(self, moment: float) -> list:
        return [text for at, text in self.frames if at > moment]


def band(page):
    return page.locator("#freshness-band")


def test_a_logout_in_another_tab_signs_this_tab_out_without_reconnecting(open_page, asgi_server):
    sockets = Sockets()
    page = open_page(asgi_server, "operator1", "/lines/01/", on_websocket=sockets)
    wait_live(page, "line:01")
    opened = len(sockets.opened)  # the overview's socket, after the login, came first

    other_tab = page.context.new_page()  # same browser, same session
    other_tab.goto(f"{asgi_server}/")
    other_tab.click("form.logout button[type=submit]")

    expect(indicator(page)).to_have_attribute(
        "data-connection-state", "signed-out", timeout=PROMPTLY_MS
    )
    expect(indicator(page)).to_have_text("Signed out")
    expect(band(page)).to_be_visible()
    expect(band(page)).to_contain_text("Signed out")
    expect(page.locator("body")).to_have_attribute("data-live", "down")
    signed_out = time.monotonic()
    assert sockets.opened[-1].is_closed()

    page.wait_for_timeout(4_000)  # longer than the first reconnect delays
    assert len(sockets.opened) == opened, "no reconnect after a sign-out"
    assert sockets.received_since(signed_out) == []
    expect(indicator(page)).to_have_attribute("data-connection-state", "signed-out")


def test_a_membership_removed_in_the_admin_stops_that_lines_data(open_page, asgi_server, plant):
    sockets = Sockets()
    page = open_page(asgi_server, "operator1", "/lines/01/", on_websocket=sockets)
    wait_live(page, "line:01")
    opened = len(sockets.opened)
    membership = LineMembership.objects.get(user__username="operator1", line__code="01")

    admin = open_page(asgi_server, "admin", f"/admin/plant/linemembership/{membership.pk}/delete/")
    admin.click("form input[type=submit]")
    admin.wait_for_url("**/admin/plant/linemembership/")
    removed = time.monotonic()

    expect(band(page)).to_contain_text("No longer allowed", timeout=PROMPTLY_MS)
    expect(band(page)).to_contain_text("line:01")
    expect(indicator(page)).to_have_text("No longer allowed")
    expect(page.locator("body")).to_have_attribute("data-live", "down")
    assert "line:01" not in page.evaluate("FleetOpsLive.topics()")

    revoked_at = max(at for at, text in sockets.frames if '"revoked"' in text)
    assert revoked_at - removed < PROMPTLY_MS / 1000
    page.wait_for_timeout(3_000)  # three line ticks
    late = [t for t in sockets.received_since(revoked_at) if '"topic":"line:01"' in t]
    assert late == [], "no line 01 data after the revocation"
    assert len(sockets.opened) == opened  # the socket stays, for what the user may still watch
