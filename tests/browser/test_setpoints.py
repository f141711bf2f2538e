"""Setpoints end to end: Chromium, daphne and the plant simulator as the
machines' gateway (telemetry in, commands out)."""

import pytest
from playwright.sync_api import expect

from apps.plant.models import Machine

pytestmark = pytest.mark.browser


def target_cell(page, code):
    return page.locator(f"#machine-row-{code.replace(':', '')} td:nth-child(4) .setpoint")


def set_target(page, code, value):
    page.select_option("#setpoint-form select[name=machine]", code)
    page.fill("#setpoint-form input[name=target_speed]", str(value))
    page.click("#setpoint-form button[type=submit]")


def wait_until_reporting(page, code):
    # The machine is alive on screen: it reports RUNNING.
    expect(page.locator(f"#machine-row-{code.replace(':', '')}")).to_contain_text(
        "RUNNING", timeout=15_000
    )


def test_a_change_shows_blue_pending_then_reconciled(login, simulator):
    with simulator("--command-delay", "2"):
        page = login("operator1")
        page.goto(page.url + "lines/01/")
        wait_until_reporting(page, "m:401")
        set_target(page, "m:401", 1234)
        cell = target_cell(page, "m:401")
        expect(cell).to_have_class("setpoint is-optimistic", timeout=5_000)
        expect(cell).to_have_text("1234")
        sent = page.locator("#setpoint-form .form-sent")
        expect(sent).to_contain_text("Sent to m:401: pending")
        # The gateway applies it after 2 s; the next frame reports it.
        expect(cell).to_have_class("setpoint", timeout=15_000)
        expect(cell).to_have_text("1234")
        # Reconciled: the form no longer says it is pending.
        expect(sent).to_have_count(0, timeout=5_000)
    assert Machine.objects.get(code="m:401").target_speed == 1234


def test_two_operators_on_the_same_field_produce_the_conflict_notice(browser, login, simulator):
    with simulator("--ignore-commands"):
        first = login("operator1")
        second = login("operator2")
        for page in (first, second):
            page.goto(page.url + "lines/01/")
            wait_until_reporting(page, "m:402")
        set_target(first, "m:402", 1100)
        expect(target_cell(first, "m:402")).to_have_class("setpoint is-optimistic", timeout=5_000)
        set_target(second, "m:402", 1900)
        expect(first.locator("#toasts .toast-conflict")).to_contain_text(
            "Updated by another operator", timeout=10_000
        )
        for page in (first, second):
            cell = target_cell(page, "m:402")
            expect(cell).to_have_class("setpoint is-conflict", timeout=5_000)
            expect(cell).to_have_text("1900")


def test_an_emergency_stop_from_the_machine_wins_over_a_pending_value(login, simulator):
    with simulator("--ignore-commands", "--fault", "m:403:EMERGENCY_STOP@9"):
        page = login("operator1")
        page.goto(page.url + "lines/01/")
        wait_until_reporting(page, "m:403")
        set_target(page, "m:403", 2750)
        cell = target_cell(page, "m:403")
        expect(cell).to_have_class("setpoint is-optimistic", timeout=5_000)
        row = page.locator("#machine-row-m403")
        expect(row).to_contain_text("EMERGENCY_STOP", timeout=20_000)
        # The same update shows the truth: no pending value over a safety state.
        expect(cell).not_to_have_class("setpoint is-optimistic")
        expect(cell).not_to_have_text("2750")
        expect(page.locator("#toasts .toast-error")).to_contain_text(
            "safety override", timeout=5_000
        )
