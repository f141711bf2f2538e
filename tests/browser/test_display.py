"""The display an operator works with: a phone shows the line as cards
with nothing off-screen, the machine page finds a sensor among 120, and
Back shows the filters the equipment list applies."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True}


def test_on_a_phone_the_line_is_cards_with_nothing_off_screen_and_big_targets(login, asgi_server):
    page = login("operator1", **PHONE)
    page.goto(f"{asgi_server}/lines/01/")
    row = page.locator("#machine-row-m401")
    expect(row).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Every cell of the card is on screen, labelled by its column.
    box = row.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    label = row.locator("td[data-label='Speed (rpm)']").evaluate(
        "td => getComputedStyle(td, '::before').content"
    )
    assert "Speed (rpm)" in label
    for target in page.locator("#setpoint-form button, #setpoint-form select").all():
        assert target.bounding_box()["height"] >= 44


def test_the_sensor_search_shows_only_the_matching_sensors(login, asgi_server):
    page = login("operator1")
    page.goto(f"{asgi_server}/machines/m:401/")
    rows = page.locator("table.sensors tr[data-sensor]")
    total = rows.count()
    assert total > 3
    page.fill("input[data-sensor-search]", "vibration")
    expect(page.locator("table.sensors tr[data-sensor]:visible").first).to_be_visible()
    visible = page.locator("table.sensors tr[data-sensor]:visible")
    expect(visible).not_to_have_count(total)
    for text in visible.all_text_contents():
        assert "Vibration" in text
    page.fill("input[data-sensor-search]", "")
    expect(page.locator("table.sensors tr[data-sensor]:visible")).to_have_count(total)


def test_each_sensor_shows_its_limits_beside_its_value(login, asgi_server, plant):
    page = login("operator1")
    page.goto(f"{asgi_server}/machines/m:401/")
    sensor = plant.machines["m:401"].sensors.exclude(high_alert=None).first()
    row = page.locator(f"table.sensors tr[data-sensor$=' {sensor.key}']")
    expect(row.locator("td.limits")).to_contain_text(f"≤ {sensor.high_alert:g}")


def test_after_back_the_equipment_filters_show_what_the_list_applies(login, asgi_server):
    page = login("viewer")
    page.goto(f"{asgi_server}/equipment/")
    page.select_option("form.filters select[name=line]", "02")
    page.wait_for_url("**/equipment/?*line=02*")
    expect(page.locator("#equipment-table")).to_contain_text("m:501")
    page.select_option("form.filters select[name=line]", "03")
    page.wait_for_url("**/equipment/?*line=03*")
    expect(page.locator("#equipment-table")).to_contain_text("m:601")

    page.go_back()
    page.wait_for_url("**/equipment/?*line=02*")
    expect(page.locator("#equipment-table")).to_contain_text("m:501")
    expect(page.locator("form.filters select[name=line]")).to_have_value("02")
