"""Dashboards in the browser: figures and activity follow clicks and sales live, without a reload."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import click_through, unique_id

pytestmark = pytest.mark.e2e

# Set on window before waiting; still there afterwards means the page never reloaded.
_MARK_PAGE = "window.__e2eSamePage = true"
_SAME_PAGE = "window.__e2eSamePage === true"


def _live_page(page: Page, path: str) -> Page:
    """Open ``path`` and wait until its socket is connected, so no event can slip by."""
    page.goto(path)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.evaluate(_MARK_PAGE)
    return page


def _count(page: Page, testid: str) -> int:
    return int(page.get_by_test_id(testid).inner_text().replace(",", ""))


def _shows(count: int):
    return re.compile(rf"^{count:,}$")


def test_partner_dashboard_follows_a_sale_and_a_click_live(new_context, live_server, tracking_api):
    partner = _live_page(new_context(role="partner").new_page(), "/partner/")
    operator = _live_page(new_context(role="manager").new_page(), "/admin/")
    conversions, clicks = _count(partner, "fig-conversions"), _count(partner, "fig-clicks")
    program_conversions = _count(operator, "fig-conversions")

    # The brand's server reports a sale for the demo partner's code.
    transaction_id = unique_id("order-dashboard")
    sale = tracking_api.conversion(transaction_id=transaction_id, amount="80.00", ref="demo")
    assert sale["status"] == "pending"

    expect(partner.get_by_test_id("fig-conversions")).to_have_text(_shows(conversions + 1))
    activity = partner.get_by_test_id("activity").get_by_role("listitem").first
    expect(activity).to_contain_text(transaction_id)
    expect(activity).to_contain_text("$80.00")
    expect(activity.locator(".badge").first).to_contain_text("sale")
    expect(partner.get_by_test_id("balance-pending")).not_to_have_text("$0.00")
    expect(operator.get_by_test_id("fig-conversions")).to_have_text(_shows(program_conversions + 1))

    # A shopper follows the partner's link: the click shows up too.
    click_through(live_server("/go/demo"))
    expect(partner.get_by_test_id("fig-clicks")).to_have_text(_shows(clicks + 1))
    expect(partner.get_by_test_id("activity").get_by_role("listitem").first).to_contain_text("click")

    assert partner.evaluate(_SAME_PAGE), "the partner's page reloaded"
    assert operator.evaluate(_SAME_PAGE), "the operator's page reloaded"


def test_a_period_and_a_csv_from_the_dashboard(new_context):
    page = new_context(role="partner").new_page()
    page.goto("/partner/")
    page.get_by_label("Period", exact=True).select_option(label="Last 7 days")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/partner/\?range=7d"))
    expect(page.get_by_test_id("chart-clicks").locator("rect")).to_have_count(7)
    with page.expect_download() as download:
        page.locator("#chart-heading").get_by_role("link", name=re.compile("CSV")).click()
    assert re.fullmatch(r"daily-demo-\d{4}-\d\d-\d\d-\d{4}-\d\d-\d\d\.csv", download.value.suggested_filename)
