"""The live layer end to end: Debian's Chromium on real daphne processes.

Values are changed the way a plant changes them (a gateway POSTing to the
telemetry API) or, while no server runs, straight in the test database; the
page has to show them without a reload, and its connection indicator
(`#connection[data-connection-state]`) has to tell the truth about the
socket all along.
"""

import json
import os
import re
import signal
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from apps.plant.models import Machine
from apps.plant.services import gateway_issue
from tests.support.processes import daphne_server, free_port

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms: the CPU is shared, so every expectation waits generously
SCHEDULE = [0, 2000, 5000, 10000, 30000]  # static/js/live.js, ms
JITTER = 0.15  # the schedule allows +-10 %; checked with a margin


# Helpers
# -------


class Gateway:
    """A gateway of line 01 that POSTs frames with ever newer device times."""

    def __init__(self, token: str):
        self.token = token
        self.ts = datetime.now(UTC)

    def send(self, base_url: str, machine: str = "m:401", **values) -> None:
        # Strictly increasing device times: the latest state is
        # last-write-wins by device timestamp.
        self.ts = max(datetime.now(UTC), self.ts + timedelta(milliseconds=1))
        frame = {"machine": machine, "ts": self.ts.isoformat().replace("+00:00", "Z")} | values
        request = urllib.request.Request(
            f"{base_url}/api/v1/telemetry",
            data=json.dumps({"batch_id": uuid.uuid4().hex, "frames": [frame]}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 202, response.read()


@pytest.fixture
def gateway(plant):
    _gateway, token = gateway_issue(
        name="gw-browser", machines=[m for m in plant.machines.values() if m.line.code == "01"]
    )
    return Gateway(token)


def indicator(page):
    return page.locator("#connection")


def speed_cell(page, slug="m401"):
    # The row's first numeric cell is the speed, the second the target.
    return page.locator(f"#machine-row-{slug} td.num").first


def header_speed(page, slug="m401"):
    return page.locator(f"#machine-header-{slug} dt:text-is('Speed') + dd")


def wait_live(page, *topics, timeout=WAIT):
    """Connected, and every topic's snapshot applied: only then do deltas
    and sequence numbers mean anything (`subscribed` arrives before the
    snapshot, so the indicator alone is not enough)."""
    expect(indicator(page)).to_have_attribute("data-connection-state", "connected", timeout=timeout)
    page.wait_for_function(
        "names => names.every(n => (FleetOpsLive.topics()[n] || {}).ready)",
        arg=list(topics),
        timeout=WAIT,
    )


def resyncs(page) -> int:
    return page.evaluate("Number(document.querySelector('main').dataset.resyncs || 0)")


# 1. Ingested values show without a reload
# ----------------------------------------


def test_an_ingested_value_shows_on_the_line_and_machine_views(open_page, asgi_server, gateway):
    page = open_page(asgi_server, "operator1", "/lines/01/")
    wait_live(page, "line:01")
    expect(speed_cell(page)).not_to_have_text("1618")
    page.evaluate("window.notReloaded = true")

    gateway.send(asgi_server, status="RUNNING", speed=1618, target_speed=1700, mode="RUN")
    row = page.locator("#machine-row-m401")
    expect(speed_cell(page)).to_have_text("1618", timeout=WAIT)
    expect(row.locator(".status-badge")).to_have_text("RUNNING")
    assert page.evaluate("window.notReloaded === true")  # swapped in place

    page.goto(f"{asgi_server}/machines/m:401/")
    wait_live(page, "m:401")
    expect(header_speed(page)).to_have_text("1618")
    page.evaluate("window.notReloaded = true")
    gateway.send(asgi_server, status="RUNNING", speed=1619)
    expect(header_speed(page)).to_have_text("1619", timeout=WAIT)
    assert page.evaluate("window.notReloaded === true")


# 2. Server restart: disconnected, the reconnect schedule, fresh state
# ---------------------------------------------------------------------


def test_a_restarted_server_is_reconnected_on_schedule_with_fresh_state(
    open_page, transactional_db, plant
):
    port = free_port()
    with daphne_server(port=port) as (base_url, _proc):
        page = open_page(base_url, "operator1", "/lines/01/")
        wait_live(page, "line:01")
        expect(page.locator("main")).to_have_css("filter", "none")
        start = page.evaluate("FleetOpsLive.log.length")
    # The server is gone: the indicator says so and the page is desaturated.
    expect(indicator(page)).to_have_attribute("data-connection-state", "disconnected", timeout=WAIT)
    expect(page.locator("main")).to_have_css("filter", re.compile("grayscale"), timeout=WAIT)

    # Meanwhile the plant moves on.
    Machine.objects.filter(code="m:401").update(speed=4242)

    # Let the immediate, 2 s and 5 s attempts fail (~7 s), then bring the
    # server back on the same port before the 10 s attempt (~17 s in).
    page.wait_for_function(
        """start => {
            const log = FleetOpsLive.log.slice(start);
            return log.filter(e => e.state === "connecting").length >= 3
                && log[log.length - 1].state === "disconnected";
        }""",
        arg=start,
        timeout=20_000,
    )
    with daphne_server(port=port):
        # The 4th attempt is due 10 s (+-10 %) after the 3rd failed, however
        # quickly the server came back: wait for it, then as usual.
        wait_live(page, "line:01", timeout=SCHEDULE[3] * (1 + JITTER) + WAIT)
        expect(speed_cell(page)).to_have_text("4242", timeout=WAIT)
        expect(page.locator("main")).to_have_css("filter", "none", timeout=WAIT)
        log = page.evaluate("FleetOpsLive.log")[start:]

    # Every reconnect attempt ("connecting") waited its delay after the
    # close before it ("disconnected"); the 4th attempt got through.
    states = [entry["state"] for entry in log]
    assert states == ["disconnected", "connecting"] * 4 + ["connected"], log
    delays = [(log[i + 1]["at"] - log[i]["at"], log[i + 1]["attempt"]) for i in range(0, 8, 2)]
    assert [attempt for _, attempt in delays] == [1, 2, 3, 4], log
    waited = [delay for delay, _ in delays]
    assert waited[0] < 1000, waited  # immediate: 0-250 ms of jitter
    for delay, base in zip(waited[1:], SCHEDULE[1:4], strict=True):
        # A timer never fires early; late by a loaded CPU, a little.
        assert base * (1 - JITTER) <= delay <= base * (1 + JITTER) + 250, waited


# 3. Withheld pings: STALE with its age
# -------------------------------------


def test_withheld_pings_show_stale_with_a_growing_age(open_page, transactional_db, plant):
    """How the pings are withheld: the daphne process is frozen (SIGSTOP).

    Dropping only the ping frames in the browser (page.route_web_socket)
    would test a state that cannot happen: pings go through the same ordered
    outbox as deltas, so a path that loses pings loses everything, and a
    page with a ping interval different from the server's would be one this
    server never renders. A frozen process (a hung server, a silently dead
    network path) is the real cause of STALE: the TCP connection stays up,
    nothing arrives. Both sides use one LIVE_PING_INTERVAL (1 s, so STALE
    shows after ~2 s); the long pong timeout keeps the server from closing
    the socket by its own clock the moment it is thawed.
    """
    with daphne_server(LIVE_PING_INTERVAL=1, LIVE_PONG_TIMEOUT=60) as (base_url, proc):
        page = open_page(base_url, "operator1", "/lines/01/")
        wait_live(page, "line:01")
        assert float(page.locator("main").get_attribute("data-ping-interval")) == 1
        label = indicator(page).locator(".connection-label")
        expect(label).to_have_text("Live")

        os.kill(proc.pid, signal.SIGSTOP)
        try:
            expect(indicator(page)).to_have_attribute(
                "data-connection-state", "stale", timeout=WAIT
            )
            expect(label).to_have_text(re.compile(r"^\d+s ago$"))
            first = int(label.text_content().removesuffix("s ago"))
            assert first >= 2, first
            # The age keeps counting while nothing arrives.
            expect(label).to_have_text(re.compile(r"^\d+s ago$"))
            page.wait_for_function(
                """first => parseInt(document.querySelector("#connection .connection-label")
                    .textContent) > first""",
                arg=first,
                timeout=WAIT,
            )
            # Stale is not disconnected: the page stays in colour.
            expect(page.locator("main")).to_have_css("filter", "none")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # The next ping brings it back.
        expect(indicator(page)).to_have_attribute(
            "data-connection-state", "connected", timeout=WAIT
        )
        expect(label).to_have_text("Live")


# 4. A sequence gap triggers a resync
# -----------------------------------


def test_a_sequence_gap_triggers_a_resync_to_the_newest_value(open_page, asgi_server, gateway):
    page = open_page(asgi_server, "operator1", "/lines/01/")
    wait_live(page, "line:01")
    assert resyncs(page) == 0

    page.evaluate("FleetOpsLive.forceGap('line:01')")
    gateway.send(asgi_server, status="RUNNING", speed=2001)
    expect(page.locator("main")).to_have_attribute("data-resyncs", "1", timeout=WAIT)
    expect(speed_cell(page)).to_have_text("2001", timeout=WAIT)

    # Back in sequence: the next change arrives as a plain delta.
    page.wait_for_function("FleetOpsLive.topics()['line:01'].ready", timeout=WAIT)
    gateway.send(asgi_server, status="RUNNING", speed=2002)
    expect(speed_cell(page)).to_have_text("2002", timeout=WAIT)
    assert resyncs(page) == 1


# 5. Topic permissions
# --------------------


def test_an_operator_of_line_01_is_refused_line_03(open_page, asgi_server):
    page = open_page(asgi_server, "operator1", "/lines/01/")
    wait_live(page, "line:01")
    messages = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const seen = [];
            const ws = new WebSocket(`ws://${location.host}/ws/live/`);
            const timer = setTimeout(() => { ws.close(); reject(JSON.stringify(seen)); }, 10000);
            ws.onopen = () => ws.send(JSON.stringify(
                {type: "subscribe", topics: ["line:03", "line:01"]}));
            ws.onmessage = (event) => {
                const message = JSON.parse(event.data);
                seen.push(message);
                // line:01 (asked second) is the control: its snapshot ends the exchange.
                if (message.type === "snapshot" && message.topic === "line:01") {
                    clearTimeout(timer);
                    ws.close();
                    resolve(seen);
                }
            };
        })"""
    )
    about_03 = [m for m in messages if m.get("topic") == "line:03"]
    assert about_03 == [{"type": "refused", "topic": "line:03", "reason": "not allowed"}], messages
    assert {"type": "subscribed", "topic": "line:01"} in messages
    assert not any("m:601" in m.get("html", "") for m in messages)

    response = page.goto(f"{asgi_server}/lines/03/")
    assert response.status == 403


# 6. Hidden tabs pause, visible ones resume with a fresh snapshot
# ---------------------------------------------------------------

SET_VISIBILITY = """hidden => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    Object.defineProperty(document, "visibilityState",
        {configurable: true, get: () => hidden ? "hidden" : "visible"});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_hidden_tab_pauses_and_resumes_with_a_fresh_snapshot(open_page, asgi_server, gateway):
    sockets = []  # [(websocket, frames received)] in the order they opened

    def record(ws):
        frames = []
        ws.on("framereceived", lambda payload: frames.append(payload))
        sockets.append((ws, frames))

    def line_sockets():  # the overview the login lands on has its own
        return [(ws, frames) for ws, frames in sockets if '"topic":"line:01"' in "".join(frames)]

    page = open_page(asgi_server, "operator1", "/lines/01/", on_websocket=record)
    wait_live(page, "line:01")
    gateway.send(asgi_server, status="RUNNING", speed=3001)
    expect(speed_cell(page)).to_have_text("3001", timeout=WAIT)
    [(first, _frames)] = line_sockets()

    page.evaluate(SET_VISIBILITY, True)
    expect(indicator(page)).to_have_attribute("data-connection-state", "disconnected", timeout=WAIT)
    expect(indicator(page)).to_have_text("Paused")
    if not first.is_closed():
        first.wait_for_event("close", timeout=WAIT)
    opened = len(sockets)

    # A change while hidden: a visible page shows it; the hidden one neither
    # reconnects nor changes.
    gateway.send(asgi_server, status="RUNNING", speed=3002)
    control = open_page(asgi_server, "viewer", "/lines/01/")
    expect(speed_cell(control)).to_have_text("3002", timeout=WAIT)
    expect(speed_cell(page)).to_have_text("3001")
    assert len(sockets) == opened
    assert page.evaluate("FleetOpsLive.state()") == "disconnected"

    page.evaluate(SET_VISIBILITY, False)
    wait_live(page, "line:01")
    expect(speed_cell(page)).to_have_text("3002", timeout=WAIT)
    assert len(sockets) == opened + 1
    # What brought it: the new socket's snapshot, rendered after the change.
    _, frames = sockets[-1]
    snapshots = [m for m in map(json.loads, frames) if m["type"] == "snapshot"]
    assert snapshots and "3002" in snapshots[0]["html"], frames
