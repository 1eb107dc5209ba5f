"""Acceptance: a top partner asks for a custom campaign link, a manager counter-offers, the
partner accepts (having seen the offer arrive live), and a sale on the new link earns the
agreed rate — shown to the partner."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from portal.extensions import db
from portal.models import User
from portal.services.partners import set_partner_tags
from portal.services.program import get_program
from tests.e2e.support import (
    APPLICANT_PASSWORD,
    CLICK_ID,
    DEMO_EMAILS,
    SHOP,
    click_through,
    create_partner,
    query_of,
    sign_in,
    unique_id,
)

pytestmark = pytest.mark.e2e

LIVE_MS = 3_000  # the counter-offer must reach the open page well before anyone would reload
# The sale's row waits on the tracking API's commit and the engine's lines too: a little more slack
# for a loaded machine.
SALE_LIVE_MS = 5_000
_MARK_PAGE = "window.__e2eSamePage = true"
_SAME_PAGE = "window.__e2eSamePage === true"


def _top_partner(live_server, label: str) -> tuple[int, str]:
    """A new approved partner carrying the program's top-partner tag."""
    with live_server.app.app_context():
        partner, email = create_partner(f"Fell Notes {label}", label)
        manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["manager"])).one()
        set_partner_tags(partner, manager, [get_program().top_partner_tag])
        db.session.commit()
        return partner.id, email


def _live(page: Page, path: str) -> None:
    page.goto(path)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.evaluate(_MARK_PAGE)


def test_request_counter_offer_accept_and_a_sale_on_the_new_link_earns_the_agreed_rate(
    new_context, live_server, tracking_api
):
    name = unique_id("Autumn tent guide")
    landing = f"{SHOP}/tents/autumn-guide"
    _partner_id, email = _top_partner(live_server, "top")

    # 1. The partner asks; a landing page off the shop's domains is refused first.
    partner = new_context().new_page()
    sign_in(partner, email, APPLICANT_PASSWORD)
    partner.get_by_role("navigation", name="Main").get_by_role("link", name="Rewards").click()
    expect(partner.get_by_role("heading", level=1)).to_have_text("Rewards")
    form = partner.locator("#request-form form")
    form.get_by_label("Campaign name").fill(name)
    form.get_by_label("Landing page").fill("https://elsewhere.example/tents")
    form.get_by_label("Rate you ask for (%)").fill("15")
    form.get_by_label("Sales you expect a month").fill("40")
    form.get_by_label("Note for the team (optional)").fill("A long review and a newsletter feature.")
    form.get_by_role("button", name="Send the request").click()
    expect(partner.locator("#landing_url-error")).to_contain_text(
        "The landing page must be on the program's sites"
    )
    expect(form.get_by_label("Campaign name")).to_have_value(name)
    form.get_by_label("Landing page").fill(landing)
    form.get_by_role("button", name="Send the request").click()
    expect(partner.locator(".flash-success")).to_contain_text("Request sent.")
    expect(partner.get_by_role("heading", level=1)).to_have_text(name)
    expect(partner.get_by_test_id("request-status")).to_contain_text("waiting for the team")

    # 2. The partner watches the Rewards page while a manager answers from the queue.
    _live(partner, "/partner/rewards")
    row = partner.get_by_test_id("campaign-request").filter(has_text=name)
    expect(row.get_by_test_id("request-status")).to_contain_text("waiting for the team")

    manager = new_context(role="manager").new_page()
    manager.goto("/admin/")
    nav = manager.get_by_role("navigation", name="Main")
    nav.get_by_test_id("nav-more").locator("summary").click()  # the less-used pages' menu
    nav.get_by_role("link", name="Campaign requests").click()
    queued = manager.get_by_test_id("queued-request").filter(has_text=name)
    expect(queued.get_by_test_id("request-status")).to_contain_text("new — waiting for the team")
    expect(queued).to_contain_text("asked: 15% of each sale")
    queued.get_by_role("link", name=name).click()
    expect(manager.get_by_role("heading", level=1)).to_have_text(name)
    expect(manager.get_by_test_id("thread-messages")).to_contain_text(
        "A long review and a newsletter feature."
    )
    counter = manager.locator("form", has=manager.get_by_role("button", name="Send the counter-offer"))
    counter.get_by_label("Rate to offer (%)").fill("150")
    counter.get_by_role("button", name="Send the counter-offer").click()
    expect(manager.locator("#rate-error")).to_contain_text("A rate cannot be over 100 %.")
    counter.get_by_label("Rate to offer (%)").fill("12")
    counter.get_by_label("Message to the partner (optional)").fill("12% for the first year, then we talk.")
    counter.get_by_role("button", name="Send the counter-offer").click()
    expect(manager.locator(".flash-success")).to_contain_text("Counter-offer sent")
    expect(manager.get_by_test_id("request-status")).to_contain_text(
        "counter-offer sent — waiting for the partner"
    )

    # 3. The offer reaches the partner's open page without a reload.
    expect(row.get_by_test_id("request-status")).to_contain_text(
        "counter-offer — waiting for your answer", timeout=LIVE_MS
    )
    expect(row).to_contain_text("offered: 12% of each sale")
    accept = row.get_by_role("button", name="Accept 12% of each sale")
    expect(accept).to_be_visible()
    assert partner.evaluate(_SAME_PAGE), "the page reloaded instead of re-fetching #rewards-live"
    expect(partner.get_by_test_id("unread-count")).to_have_text(re.compile(r"^[1-9]\d*$"))

    # 4. The partner accepts; the manager's open page follows live.
    accept.click()
    expect(partner.locator(".flash-success")).to_contain_text("Offer accepted.")
    expect(partner.get_by_test_id("request-status")).to_contain_text("approved — your campaign link is ready")
    expect(partner.get_by_test_id("thread-messages")).to_contain_text(
        "I accept the counter-offer of 12% of each sale"
    )
    link_url = partner.get_by_test_id("campaign-link").input_value()
    assert re.fullmatch(re.escape(live_server("/go/")) + r"[a-z0-9]+", link_url), link_url
    expect(partner.locator("main")).to_contain_text("Earns 12% of each sale on sales through this link until")
    expect(manager.get_by_test_id("request-status")).to_have_attribute(
        "data-status", "approved", timeout=LIVE_MS
    )

    expect(partner.locator("#live-status")).to_have_attribute("data-state", "live")
    partner.evaluate(_MARK_PAGE)

    # 5. A shopper follows the new link to the landing page, and the shop reports the sale.
    location = click_through(link_url)
    assert location.startswith(landing + "?"), location
    click_id = query_of(location)["click_id"]
    assert CLICK_ID.fullmatch(click_id)
    transaction_id = unique_id("order-autumn")
    sale = tracking_api.conversion(transaction_id=transaction_id, amount="250.00", click_id=click_id)
    assert sale["commission"]["amount"] == "30.00", sale  # 12 % of 250.00, not the base 10 %

    # 6. The partner, still on the request's page, sees the sale arrive with the agreed rate and why.
    sales = partner.get_by_test_id("campaign-sales")
    sale_row = sales.get_by_role("row").filter(
        has=partner.get_by_role("link", name=transaction_id, exact=True)
    )
    expect(sale_row).to_be_visible(timeout=SALE_LIVE_MS)
    expect(sale_row.locator("td[data-label='You earn']")).to_have_text("$30.00")
    expect(sale_row.locator("td[data-label='Why this amount']")).to_contain_text(
        f"Campaign “{name}”: 12% of $250.00."
    )
    assert partner.evaluate(_SAME_PAGE), "the request page reloaded instead of re-fetching its card"

    # ...and in their conversions list.
    partner.goto("/partner/conversions")
    listed = (
        partner.get_by_test_id("conversions-table")
        .get_by_role("row")
        .filter(has=partner.get_by_role("link", name=transaction_id, exact=True))
    )
    expect(listed.locator("td[data-label=Commission]")).to_contain_text("$30.00")
