"""A workbook upload end to end in Chromium: the form, the progress, the row
errors, the report's link, then the pending setpoints reconciled by the
simulator."""

import re

import pytest
from openpyxl import Workbook
from playwright.sync_api import expect

from tests.conftest import SERVICES_PROFILE
from tests.support.processes import celery_worker

pytestmark = pytest.mark.browser


def workbook(path):
    book = Workbook()
    sheet = book.active
    sheet.append(["Machine ID", "Target Speed", "Mode"])
    sheet.append(["m:401", 1300, "RUN"])
    sheet.append(["m:402", "fast", "RUN"])  # row 3: not a number
    sheet.append(["m:999", 1000, "RUN"])  # row 4: no such machine
    sheet.append(["m:403", 1200, "<script>alert(1)</script>"])  # row 5: shown as text
    for n in range(3000):  # enough rows that parsing reports progress
        sheet.append([f"m:40{n % 2 + 3}", 1000 + n % 7, "RUN"])
    sheet.append(["m:404", 1400, "RUN"])
    book.save(path)
    return path


def test_an_upload_shows_progress_row_errors_then_reconciled_setpoints(login, simulator, tmp_path):
    with simulator():
        page = login("operator1")
        page.goto(page.url + "workbooks/")
        page.set_input_files("input[type=file]", str(workbook(tmp_path / "setpoints.xlsx")))
        page.click(".upload-form button[type=submit]")
        expect(page).to_have_url(re.compile(r"/workbooks/\d+/$"))
        if SERVICES_PROFILE:
            # No worker yet: the upload waits, and the page says so with its bar.
            expect(page.locator("progress")).to_be_visible()
            expect(page.locator(".upload-status")).to_contain_text("waiting for a worker")
            worker = celery_worker(purge=False)  # the upload's task is already queued
        else:
            worker = None  # eager: parsed within the request
        if worker:
            worker.__enter__()
        try:
            status = page.locator(".upload-status")
            expect(status.locator(".upload-state")).to_have_attribute(
                "data-status", "applied", timeout=30_000
            )
            errors = page.locator(".row-errors")
            expect(errors).to_contain_text("3")
            expect(errors).to_contain_text("m:999")
            expect(errors).to_contain_text("<script>alert(1)</script>")  # as text
            assert page.locator(".row-errors script").count() == 0
            # The report is written after the parse; its link arrives live.
            expect(page.locator(".upload-report a[download]")).to_have_text(
                "Download the report", timeout=30_000
            )

            page.goto(page.url.split("/workbooks/")[0] + "/lines/01/")
            cell = page.locator("#machine-row-m401 td:nth-child(4) .setpoint")
            expect(cell).to_have_text("1300", timeout=15_000)
            # The simulator confirms and reports it: the pending style goes.
            expect(cell).to_have_class("setpoint", timeout=15_000)
            expect(page.locator("#machine-row-m404 td:nth-child(4) .setpoint")).to_have_text(
                "1400", timeout=15_000
            )
        finally:
            if worker:
                worker.__exit__(None, None, None)
