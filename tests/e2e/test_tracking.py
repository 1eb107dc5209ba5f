"""The money path in the browser: a partner's link, a shopper's click, the brand's API calls, the trail."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import (
    CLICK_ID,
    SHOP,
    SHOPPER_HEADERS,
    TrackingApi,
    query_of,
    stub_shop,
    unique_id,
)

pytestmark = pytest.mark.e2e

# The list must follow the socket's "conversion" event, well before anyone would reload.
LIVE_UPDATE_MS = 3_000
# Set on window before waiting; still there afterwards means the page never reloaded.
_MARK_PAGE = "window.__e2eSamePage = true"
_SAME_PAGE = "window.__e2eSamePage === true"


def _live_page(page: Page, path: str) -> Page:
    """Open ``path`` and wait until its socket is connected, so no event can slip by."""
    page.goto(path)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.evaluate(_MARK_PAGE)
    return page


def _conversion_row(page: Page, transaction_id: str):
    return (
        page.get_by_test_id("conversions-table")
        .get_by_role("row")
        .filter(has=page.get_by_role("link", name=transaction_id, exact=True))
    )


def _trail_step(page: Page, step: str):
    return (
        page.get_by_test_id("trail")
        .get_by_role("listitem")
        .filter(has=page.locator(".step", has_text=re.compile(rf"^{step}$")))
    )


def test_partner_link_click_signup_and_sale_show_up_live_with_the_trail(
    new_context, live_server, tracking_api
):
    label = unique_id("Ridge tent video — YouTube")
    destination = f"{SHOP}/tents/trailhead-2p?colour=sage"

    # The partner makes a link for one place they share.
    partner_context = new_context(role="partner")
    partner_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    partner = partner_context.new_page()
    partner.goto("/partner/links")
    partner.get_by_label("Name", exact=True).fill(label)
    partner.get_by_label("Channel").select_option(label="Video")
    partner.get_by_label("Page it opens").fill(destination)
    partner.get_by_role("button", name="Make the link").click()

    expect(partner).to_have_url(live_server("/partner/links"))
    expect(partner.locator(".flash-success")).to_contain_text(f"Link “{label}” is ready to share.")
    row = (
        partner.get_by_test_id("links-table")
        .get_by_role("row")
        .filter(has=partner.locator("strong", has_text=re.compile(f"^{re.escape(label)}$")))
    )
    expect(row).to_have_count(1)
    expect(row.locator("td[data-label=Channel]")).to_have_text("Video")
    expect(row).to_contain_text(f"→ {destination}")
    link_input = row.get_by_role("textbox", name=f"Link for {label}")
    link_url = link_input.input_value()
    assert re.fullmatch(re.escape(live_server("/go/")) + r"[a-z0-9]+", link_url), link_url
    code = link_url.rsplit("/", 1)[1]
    # Copying needs portal.js, a deferred script: it has run once DOMContentLoaded has fired.
    partner.wait_for_load_state("domcontentloaded")
    # By its attribute: once clicked its name is "Copied ✔" for a moment.
    copy = row.locator("button[data-copy]")
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied ✔")
    assert partner.evaluate("navigator.clipboard.readText()") == link_url

    # A shopper (another browser, another address) follows it and lands on the shop.
    shopper = new_context(
        extra_http_headers={"X-Forwarded-For": SHOPPER_HEADERS["X-Forwarded-For"]},
        user_agent=SHOPPER_HEADERS["User-Agent"],
    ).new_page()
    shop_pages = stub_shop(shopper)
    shopper.goto(link_url)
    expect(shopper).to_have_url(re.compile(rf"^{re.escape(SHOP)}/tents/trailhead-2p\?"))
    expect(shopper.get_by_role("heading", name="Northwind Outdoor (stub)")).to_be_visible()
    assert shop_pages == [shopper.url]
    landing = query_of(shopper.url)
    assert landing["colour"] == "sage"
    assert landing["ref"] == "demo"
    click_id = landing["click_id"]
    assert CLICK_ID.fullmatch(click_id), click_id

    # The click is counted on the partner's links page.
    partner.reload()
    expect(row.locator("td[data-label=Clicks]")).to_have_text("1")

    # The partner watches their conversions while the shop's server reports the signup and sale.
    _live_page(partner, "/partner/conversions")
    customer_id = unique_id("customer")
    transaction_id = unique_id("order")
    signup = tracking_api.signup(customer_id=customer_id, click_id=click_id)
    assert signup["attributed"] is True
    assert (signup["partner_ref"], signup["attributed_by"], signup["click_id"]) == (
        "demo",
        "click_id",
        click_id,
    )
    sale = tracking_api.conversion(
        transaction_id=transaction_id, amount="49.90", customer_id=customer_id, click_id=click_id
    )
    assert (sale["status"], sale["partner_ref"], sale["attributed_by"]) == ("pending", "demo", "click_id")
    assert sale["commission"]["amount"] == "4.99"

    sale_row = _conversion_row(partner, transaction_id)
    expect(sale_row).to_be_visible(timeout=LIVE_UPDATE_MS)
    expect(sale_row.locator("td[data-label=Sale]")).to_have_text("$49.90")
    expect(sale_row.locator("td[data-label=Status] .badge")).to_have_attribute("data-status", "pending")
    expect(sale_row.locator("td[data-label=Commission]")).to_contain_text("$4.99")
    assert partner.evaluate(_SAME_PAGE), "the list reloaded the page instead of re-fetching #conversion-list"

    # The trail, step by step.
    sale_row.get_by_role("link", name=transaction_id).click()
    expect(partner.get_by_role("heading", level=1)).to_have_text(f"Order {transaction_id}")
    expect(partner.get_by_test_id("trail").get_by_role("listitem")).to_have_count(4)
    click_step = _trail_step(partner, "Click")
    expect(click_step).to_contain_text(f"link {code} ({label})")
    expect(click_step).to_contain_text(re.compile(r"channel video", re.IGNORECASE))
    expect(_trail_step(partner, "Signup")).to_contain_text(f"customer {customer_id}")
    conversion_step = _trail_step(partner, "Conversion")
    expect(conversion_step).to_contain_text("sale of $49.90")
    expect(conversion_step).to_contain_text("credited by your click")
    commission_step = _trail_step(partner, "Commission")
    expect(commission_step.locator("strong")).to_have_text("$4.99")
    expect(commission_step).to_contain_text("10% of $49.90")
    expect(commission_step).to_contain_text("if not refunded")
    expect(partner.locator("p", has_text="Commission now:")).to_contain_text("$4.99")


def test_refund_rejects_the_sale_and_says_why(new_context, live_server, tracking_api):
    transaction_id = unique_id("order-refunded")
    tracking_api.conversion(
        transaction_id=transaction_id, amount="80.00", customer_id=unique_id("c"), ref="demo"
    )

    partner = _live_page(new_context(role="partner").new_page(), "/partner/conversions")
    row = _conversion_row(partner, transaction_id)
    status = row.locator("td[data-label=Status]")
    expect(status.locator(".badge")).to_have_attribute("data-status", "pending")

    refunded = tracking_api.refund(transaction_id)
    assert (refunded["status"], refunded["rejection_reason"]) == ("rejected", "refund")
    assert refunded["commission"]["amount"] == "0.00"

    # The open list follows the refund live.
    expect(status.locator(".badge")).to_have_attribute("data-status", "rejected", timeout=LIVE_UPDATE_MS)
    expect(status).to_contain_text("rejected")
    expect(status).to_contain_text("Why: the order was refunded")
    expect(row.locator("td[data-label=Sale]")).to_contain_text("$80.00 refunded")
    assert partner.evaluate(_SAME_PAGE)

    row.get_by_role("link", name=transaction_id).click()
    expect(partner.get_by_role("heading", level=1)).to_have_text(f"Order {transaction_id}")
    expect(partner.locator("main")).to_contain_text("Why: the order was refunded")
    reversal = _trail_step(partner, "Reversal")
    expect(reversal.locator("strong")).to_have_text("-$8.00")
    expect(reversal).to_contain_text("because the order was refunded")
    expect(partner.locator("p", has_text="Commission now:")).to_contain_text("$0.00")


def test_operators_review_orders_held_as_duplicates(new_context, live_server, tracking_api: TrackingApi):
    customer_id = unique_id("repeat-buyer")
    original, held, also_held = (unique_id(f"order-{n}") for n in ("a", "b", "c"))
    same = {"amount": "120.00", "customer_id": customer_id, "ref": "demo"}
    assert tracking_api.conversion(transaction_id=original, **same)["status"] == "pending"
    for transaction_id in (held, also_held):
        sale = tracking_api.conversion(transaction_id=transaction_id, **same)
        assert (sale["status"], sale["flagged_reason"], sale["commission"]) == ("review", "duplicate", None)

    partner = _live_page(new_context(role="partner").new_page(), "/partner/conversions")
    held_status = _conversion_row(partner, held).locator("td[data-label=Status]")
    expect(held_status.locator(".badge")).to_have_attribute("data-status", "review")

    # A manager works through the review queue.
    manager = new_context(role="manager").new_page()
    manager.goto("/admin/")
    nav = manager.get_by_role("navigation", name="Main")
    nav.get_by_test_id("nav-more").locator("summary").click()  # the less-used pages' menu
    nav.get_by_role("link", name="Conversions to review").click()
    expect(manager).to_have_url(live_server("/admin/conversions?status=review"))
    queued = manager.get_by_role("row").filter(has=manager.get_by_role("link", name=held, exact=True))
    expect(queued).to_contain_text("under review")
    expect(queued).to_contain_text("flagged: a duplicate of another order")
    queued.get_by_role("link", name=held).click()

    expect(manager.get_by_role("heading", level=1)).to_have_text(f"Conversion {held}")
    badge = manager.get_by_test_id("conversion-status").locator(".badge")
    expect(badge).to_have_attribute("data-status", "review")
    expect(manager.locator("p", has_text="Flagged by rule:")).to_contain_text("a duplicate of another order")
    manager.get_by_label("Reason").select_option("duplicate")
    manager.get_by_label("Note for the partner").fill(f"Same basket as {original}, sent twice by the shop.")
    manager.get_by_role("button", name="Reject").click()
    expect(manager.locator(".flash-success")).to_contain_text(f"Conversion {held} rejected.")
    expect(badge).to_have_attribute("data-status", "rejected")
    expect(manager.locator("p", has_text="Reason:")).to_contain_text("a duplicate of another order")
    expect(manager.get_by_role("button", name="Reject")).to_have_count(0)

    # The partner's open list shows the rejection, with the reason in plain words.
    expect(held_status.locator(".badge")).to_have_attribute("data-status", "rejected", timeout=LIVE_UPDATE_MS)
    expect(held_status).to_contain_text("Why: a duplicate of another order")

    # The other one was a real second order: approved, it earns.
    manager.goto(f"/admin/conversions/{live_server.conversion_id(also_held)}")
    manager.get_by_role("button", name=re.compile("Approve")).click()
    expect(manager.locator(".flash-success")).to_contain_text(f"Conversion {also_held} approved.")
    expect(badge).to_have_attribute("data-status", "pending")
    expect(manager.locator("dt:has-text('Reviewed') + dd")).to_contain_text("Morgan Manager")
    expect(manager.locator("main")).to_contain_text("commission · $12.00 ·")
    expect(manager.get_by_test_id("line-state").first).to_contain_text("pending")

    approved = _conversion_row(partner, also_held)
    expect(approved.locator("td[data-label=Status] .badge")).to_have_attribute(
        "data-status", "pending", timeout=LIVE_UPDATE_MS
    )
    expect(approved.locator("td[data-label=Commission]")).to_contain_text("$12.00")
    assert partner.evaluate(_SAME_PAGE)
    assert tracking_api.get(f"/conversions/{held}").body["conversion"]["rejection_reason"] == "duplicate"


def test_admin_creates_an_api_key_that_works_until_revoked(new_context, live_server):
    name = unique_id("warehouse server")
    admin = new_context(role="admin").new_page()
    admin.goto("/admin/api-keys")
    admin.get_by_label("Name").fill(name)
    admin.get_by_role("button", name="Create the key").click()

    new_key = admin.get_by_test_id("new-key")
    expect(new_key).to_have_value(re.compile(r"^ppk_[0-9a-f]{8}_\S{40,}$"))
    plain = new_key.input_value()
    row = admin.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text(f"ppk_{plain.split('_')[1]}_…")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("never")

    api = TrackingApi(live_server.url, plain)
    answer = api.post("/signups", {"customer_id": unique_id("key-check"), "ref": "demo"})
    assert answer.status == 201, answer.body

    # Shown once: a fresh visit lists the key by its prefix only, now with a last use.
    admin.goto("/admin/api-keys")
    expect(admin.get_by_test_id("new-key")).to_have_count(0)
    expect(admin.locator("main")).not_to_contain_text(plain)
    expect(row.locator("td[data-label='Last used']")).not_to_have_text("never")

    # Revoking asks first; dismissing the question changes nothing.
    admin.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Revoke").click()
    expect(row.get_by_role("button", name="Revoke")).to_have_count(1)
    admin.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(admin.locator(".flash-success")).to_contain_text(
        f"Key “{name}” is revoked; requests with it now get 401."
    )
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)

    refused = api.post("/signups", {"customer_id": unique_id("key-check"), "ref": "demo"})
    assert refused.status == 401, refused.body
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/conversions/anything").status == 401
