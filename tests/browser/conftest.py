"""Real-browser fixtures: Debian's Chromium driven by Playwright, against a
daphne process serving the test database."""

import subprocess
from contextlib import contextmanager

import pytest
from playwright.sync_api import sync_playwright

from apps.plant.services import gateway_issue
from tests.support.processes import BIN, ROOT, child_env, daphne_server, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    # Module scope: the sync API's loop must be gone before async tests run.
    # While it runs, Django sees a running loop in this thread and would
    # refuse the test database's setup and flush, which are safe here.
    mp = pytest.MonkeyPatch()
    mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    mp.undo()


@pytest.fixture
def asgi_server(transactional_db, plant):
    with daphne_server() as (base_url, _proc):
        yield base_url


@pytest.fixture
def login(browser, asgi_server):
    contexts = []

    def as_user(username, password="fleetops-demo", **context_options):
        """A logged-in page; `context_options` go to the browser context
        (a phone's viewport, touch)."""
        context = browser.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{asgi_server}/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{asgi_server}/")
        return page

    yield as_user
    for context in contexts:
        context.close()


@pytest.fixture
def simulator(asgi_server, plant, tmp_path):
    """Start the simulator for line 01's machines with extra options."""
    machines = [plant.machines[code] for code in ("m:401", "m:402", "m:403", "m:404")]
    _gateway, token = gateway_issue(name="gw-line-01", machines=machines)
    procs = []

    @contextmanager
    def run(*options):
        log = open(tmp_path / f"simulator-{len(procs)}.log", "w")
        proc = subprocess.Popen(
            [
                str(BIN / "python"),
                "manage.py",
                "run_gateway",
                "--server",
                asgi_server,
                "--token",
                token,
                "--sensors",
                "4",
                "--rate",
                "1",
                "--ramp-rate",
                "2000",
                "--queue",
                str(tmp_path / f"queue-{len(procs)}.sqlite3"),
                *options,
            ],
            cwd=ROOT,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        try:
            yield proc
        finally:
            stop(proc)
            log.close()

    return run


@pytest.fixture
def open_page(browser):
    """open_page(base_url, username, path) -> a logged-in page at `path`;
    `on_websocket` sees every socket the page opens, from the login on."""
    contexts = []

    def open_(base_url, username, path, password="fleetops-demo", on_websocket=None):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        if on_websocket:
            page.on("websocket", on_websocket)
        page.goto(f"{base_url}/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base_url}/")
        page.goto(f"{base_url}{path}")
        return page

    yield open_
    for context in contexts:
        context.close()
