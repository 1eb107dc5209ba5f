"""The operator lists in a real browser: the partners list sorts and filters in place (htmx, the
address follows), and an application is approved from its row with the CSRF token htmx sends."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_the_partners_list_sorts_and_filters_in_place(new_context, live_server, tracked_sale):
    page = new_context(role="manager").new_page()
    page.goto("/admin/partners")
    page.evaluate("window.stayedOnThePage = true")
    results = page.get_by_test_id("partner-results")

    page.get_by_test_id("sort-sales").click()
    expect(page).to_have_url(re.compile(r"sort=sales&dir=desc"))
    expect(results.locator("th[aria-sort=descending]")).to_contain_text("Sales")
    first = results.get_by_test_id("partner-row").first
    expect(first).to_contain_text("partner@example.com")  # the demo partner sells most

    page.get_by_label("Status").select_option("applied")
    expect(page).to_have_url(re.compile(r"status=applied"))
    expect(results.get_by_test_id("partner-row").first.get_by_test_id("row-sales")).to_have_text("$0.00")
    assert page.evaluate("window.stayedOnThePage === true")  # swapped, never reloaded


def test_an_application_is_approved_from_the_list(new_context, live_server, make_applicant):
    partner_id, email = make_applicant("approve-from-list")
    page = new_context(role="manager").new_page()
    page.goto("/admin/applications")
    row = page.get_by_test_id("application-row").filter(has_text=email)
    expect(row.get_by_test_id("waiting-since")).to_contain_text("today")
    page.evaluate("window.stayedOnThePage = true")
    row.get_by_role("button", name="Approve").click()
    expect(page.get_by_text("E2E Approve-From-List is approved.")).to_be_visible()
    expect(page.get_by_test_id("application-row").filter(has_text=email)).to_have_count(0)
    assert page.evaluate("window.stayedOnThePage === true")
    assert live_server.partner_status(partner_id)[0] == "approved"
