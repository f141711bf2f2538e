import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_operator1_sees_line_01_and_nothing_of_line_03(login, asgi_server):
    page = login("operator1")
    errors = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    expect(page.locator("#line-card-01")).to_contain_text("m:401")
    expect(page.locator("#line-card-03")).to_have_count(0)
    assert "m:601" not in page.content()

    page.click("text=line:01")
    expect(page).to_have_url(re.compile(r"/lines/01/$"))
    for code in ["m:401", "m:402", "m:403", "m:404"]:
        expect(page.locator("#machine-table")).to_contain_text(code)
    # The page goes live: socket open and subscription acknowledged.
    expect(page.locator("#connection")).to_have_attribute("data-connection-state", "connected")
    assert errors == [], errors  # no CSP violation or script error on the way

    response = page.goto(f"{asgi_server}/lines/03/")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    assert "not a member of line 03" in page.content()


def test_a_wrong_password_is_refused_with_a_clear_message(browser, asgi_server):
    page = browser.new_page()
    page.goto(f"{asgi_server}/lines/01/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/lines/01/"))
    page.fill("input[name=username]", "operator1")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("did not match")
    page.close()
