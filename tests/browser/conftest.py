"""Real-browser fixtures: Debian's Chromium driven by Playwright, against a
daphne process serving the test database."""

import pytest
from playwright.sync_api import sync_playwright

from tests.support.processes import daphne_server

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

    def as_user(username, password="fleetops-demo"):
        context = browser.new_context()
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
