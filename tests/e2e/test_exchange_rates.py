"""Exchange rates in a real browser, 375 px wide: a sale in Swiss francs without a rate is held
and listed, a rate typed by hand converts it, and the partner sees both amounts."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.models.types import utcnow
from tests.e2e.test_mobile_layout import _assert_no_sideways_scroll

pytestmark = pytest.mark.e2e


def test_a_rate_typed_on_a_phone_converts_the_held_sale(mobile_page, screenshot_dir, tracking_api):
    sale = {"transaction_id": "e2e-chf-1", "amount": "89.90", "currency": "CHF", "ref": "demo"}
    answer = tracking_api.post("/conversions", sale)
    assert (answer.status, answer.body["conversion"]["status"]) == (201, "held"), answer.body
    page = mobile_page("manager")
    page.goto("/admin/rates")
    waiting = page.get_by_test_id("rates-waiting")
    expect(waiting).to_contain_text("held: no exchange rate")
    _assert_no_sideways_scroll(page, "with a sale waiting")
    page.screenshot(path=str(screenshot_dir / "admin-rates-375.png"), full_page=True)

    page.get_by_role("link", name="See the held sales").click()
    expect(page.get_by_text("e2e-chf-1")).to_be_visible()
    expect(page.get_by_text("not converted yet: no exchange rate").first).to_be_visible()

    page.goto("/admin/rates")
    page.get_by_label("From currency").fill("CHF")
    page.get_by_label("Rate", exact=True).fill("1,13")  # a comma: refused beside the field, the rest kept
    page.get_by_label("To currency").fill("USD")
    page.get_by_label("Day of the rate").fill(utcnow().date().isoformat())
    page.get_by_role("button", name="Save the rate").click()
    expect(page.get_by_text('Type the rate as a plain decimal number such as "1.0812".')).to_be_visible()
    expect(page.get_by_label("From currency")).to_have_value("CHF")
    _assert_no_sideways_scroll(page, "with a field error")

    page.get_by_label("Rate", exact=True).fill("1.13")
    page.get_by_role("button", name="Save the rate").click()
    expect(page.get_by_text("1 sale that was waiting for a rate is converted.")).to_be_visible()
    expect(page.get_by_test_id("rates-waiting")).to_contain_text(
        "every sale in another currency has been converted"
    )
    expect(page.get_by_test_id("rates-table")).to_contain_text("1 CHF = 1.13 USD")

    partner = mobile_page("partner")
    partner.goto("/partner/conversions")
    expect(partner.get_by_text("sold as CHF", exact=False).first).to_be_visible()
    _assert_no_sideways_scroll(partner, "with a sale in another currency")
