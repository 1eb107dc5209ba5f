import re
import pytest
from playwright.sync_api import expect
pytestmark = pytest.mark.e2e

def test_probe(new_context, payout_showcase, live_server):
    m = new_context(role="manager").new_page()
    m.goto(f"/admin/payouts/{payout_showcase.batch_id}")
    row = m.get_by_test_id("items").locator("tr").filter(has=m.locator("details")).first
    row.locator("summary").click()
    row.get_by_label("Payment reference").fill("PP-ONLY-THIS-ITEM")
    row.get_by_label("Paid on").fill("2030-01-01")
    with m.expect_response(re.compile(r"/paid$")) as a:
        row.get_by_role("button", name="Paid").click()
    print("status", a.value.status, m.url)
    print("flash", m.locator(".flashes").inner_text())
    bulk = m.locator("form").filter(has=m.get_by_role("button", name="Mark every waiting payment paid"))
    print("bulk ref value:", bulk.get_by_label("Payment reference").input_value())
    print("bulk date value:", bulk.get_by_label("Paid on").input_value())
    print("errors:", [e.inner_text() for e in m.locator(".error").all()])
    print("details open:", [d.get_attribute("open") for d in m.locator("details").all()])
    m.screenshot(path="/tmp/probe-422.png", full_page=True)
