"""Every page each role can reach is usable 375 px wide: no sideways scrolling, a working menu."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from portal.extensions import db
from tests.e2e.support import APPLICANT_PASSWORD, MOBILE, create_partner, sign_in

pytestmark = pytest.mark.e2e

NAV_LINKS = {
    None: ["Sign in", "Apply"],
    "applicant": ["My application"],
    "partner": ["Dashboard"],
    "earner": ["Dashboard"],
    "top": ["Dashboard", "Rewards"],
    "manager": ["Dashboard", "Applications", "Partners"],
    "admin": ["Dashboard", "Applications", "Partners", "Settings", "Team"],
}
PARTNER_DETAIL = "/admin/partners/<applied demo partner>"
# The churn-risk list's "Message": a new thread to one partner.
NEW_THREAD = "/admin/inbox/new/<applied demo partner>"
# The tracked sale's pages: a whole trail (link, click, signup, sale, commission) with long ids.
PARTNER_TRAIL = "/partner/conversions/<tracked sale>"
ADMIN_CONVERSION = "/admin/conversions/<tracked sale>"
# The payout showcase: a partner with a line in every state, and an approved batch with long names.
PAYOUT_BATCH = "/admin/payouts/<approved batch>"
# The demo's running campaign (its rules and its links).
DEMO_CAMPAIGN = "/admin/rewards/campaigns/<demo campaign>"
# The request showcase: a top partner with a request waiting, one countered and one approved.
PARTNER_REQUEST = "/partner/rewards/requests/<countered request>"
PARTNER_APPROVED_REQUEST = "/partner/rewards/requests/<approved request>"
ADMIN_REQUEST = "/admin/campaign-requests/<waiting request>"
# Pages that would show only an empty state without it.
NEEDS_TRACKED_SALE = {
    "/partner/",
    "/partner/?range=90d",
    "/admin/",
    "/admin/?range=last_month",
    "/partner/links",
    "/partner/conversions",
    "/admin/conversions",
    PARTNER_TRAIL,
    ADMIN_CONVERSION,
}
PAGES = [
    (None, "/"),
    (None, "/login"),
    (None, "/apply"),
    (None, "/password/forgot"),
    ("applicant", "/status"),
    ("partner", "/partner/"),
    # the dashboards with weekly bars and another period
    ("partner", "/partner/?range=90d"),
    ("partner", "/partner/links"),
    ("partner", "/partner/terms"),
    ("partner", "/partner/conversions"),
    ("partner", PARTNER_TRAIL),
    # "earner": the showcase partner (paid, clawed back, in payout, confirmed and pending lines).
    ("earner", "/partner/earnings"),
    ("earner", "/partner/payout-details"),
    # "top": the request showcase's top partner (the request form, every request state, a deal).
    ("top", "/partner/rewards"),
    ("top", PARTNER_REQUEST),
    ("top", PARTNER_APPROVED_REQUEST),
    ("partner", "/partner/rewards"),
    ("manager", "/admin/"),
    ("manager", "/admin/?range=last_month"),
    ("manager", NEW_THREAD),
    ("manager", "/admin/applications"),
    ("manager", "/admin/partners"),
    ("manager", PARTNER_DETAIL),
    ("manager", "/admin/conversions"),
    ("manager", ADMIN_CONVERSION),
    ("manager", "/admin/integration"),
    ("manager", "/admin/payouts"),
    ("manager", PAYOUT_BATCH),
    ("manager", "/admin/campaign-requests"),
    ("manager", ADMIN_REQUEST),
    ("partner", "/partner/inbox"),
    ("manager", "/admin/announcements/new"),
    ("manager", "/admin/automatic-messages/wake_up"),
    ("manager", "/admin/rewards"),
    ("manager", "/admin/rewards/tiers"),
    ("manager", "/admin/rewards/tiers/new"),
    ("manager", "/admin/rewards/campaigns"),
    ("manager", "/admin/rewards/campaigns/new"),
    ("manager", DEMO_CAMPAIGN),
    ("manager", "/admin/rewards/ladder"),
    ("manager", "/admin/rewards/deals"),
    ("manager", "/admin/rewards/deals/new"),
    ("admin", "/admin/settings"),
    ("admin", "/admin/team"),
    ("admin", "/admin/api-keys"),
]

# What is wider than the viewport, named well enough to find in a template.
_MEASURE = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 0.5) {
      const classes = typeof el.className === "string" && el.className.trim()
        ? "." + el.className.trim().split(/\\s+/).join(".") : "";
      const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + classes;
      wide.push(`${name} (right ${Math.round(box.right)})`);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, wide: wide.slice(0, 8)};
}"""


def _assert_no_sideways_scroll(page: Page, when: str) -> None:
    measured = page.evaluate(_MEASURE)
    assert measured["scrollWidth"] <= MOBILE["width"], (
        f"{page.url} {when}: {measured['scrollWidth']} px wide at {MOBILE['width']} px; "
        f"too wide: {measured['wide']}"
    )


def _slug(role: str | None, path: str) -> str:
    name = re.sub(r"[<>]", "", path).replace("/", "_").replace(" ", "-").replace("?", "-")
    return f"{role or 'anonymous'}{name}"


@pytest.mark.parametrize(("role", "path"), PAGES, ids=[_slug(r, p) for r, p in PAGES])
def test_page_fits_375px_and_its_menu_opens(
    role, path, mobile_page, make_applicant, demo_applicant_id, screenshot_dir, live_server, request
):
    if role == "applicant":
        _partner_id, email = make_applicant("mobile")
        page = mobile_page()
        sign_in(page, email, APPLICANT_PASSWORD)
    elif role == "earner":
        page = mobile_page()
        sign_in(page, request.getfixturevalue("payout_showcase").earner_email, APPLICANT_PASSWORD)
    elif role == "top":
        page = mobile_page()
        sign_in(page, request.getfixturevalue("request_showcase").email, APPLICANT_PASSWORD)
    else:
        page = mobile_page(role)
    if path in (PARTNER_DETAIL, NEW_THREAD):
        path = path.replace("<applied demo partner>", str(demo_applicant_id))
    elif path == PAYOUT_BATCH or path == "/admin/payouts":
        showcase = request.getfixturevalue("payout_showcase")
        path = path.replace("<approved batch>", str(showcase.batch_id))
    elif path == DEMO_CAMPAIGN:
        path = path.replace("<demo campaign>", str(live_server.demo_campaign_id()))
    elif path in (PARTNER_REQUEST, PARTNER_APPROVED_REQUEST, ADMIN_REQUEST) or (
        role == "manager" and path == "/admin/campaign-requests"
    ):
        showcase = request.getfixturevalue("request_showcase")
        path = path.replace("<countered request>", str(showcase.countered_id))
        path = path.replace("<waiting request>", str(showcase.requested_id))
        path = path.replace("<approved request>", str(showcase.approved_id))
    elif path in NEEDS_TRACKED_SALE:
        sale = request.getfixturevalue("tracked_sale")
        path = path.replace("<tracked sale>", str(sale.conversion_id))

    response = page.goto(path)
    assert response is not None
    assert response.status == 200
    expect(page).to_have_url(live_server(path))
    _assert_no_sideways_scroll(page, "with the menu closed")
    page.screenshot(path=screenshot_dir / f"{_slug(role, path)}.png", full_page=True)

    nav = page.get_by_role("navigation", name="Main")
    links = [nav.get_by_role("link", name=name, exact=True) for name in NAV_LINKS[role]]
    for link in links:
        expect(link).to_be_hidden()

    nav.locator("label[for=nav-toggle]").click()
    for link in links:
        expect(link).to_be_visible()
        expect(link).to_be_in_viewport()
    if role is not None:
        expect(nav.get_by_role("button", name="Sign out")).to_be_visible()
    _assert_no_sideways_scroll(page, "with the menu open")
    page.screenshot(path=screenshot_dir / f"{_slug(role, path)}-menu.png")


def test_menu_opens_from_the_keyboard(mobile_page):
    page = mobile_page("manager")
    page.goto("/admin/")
    nav = page.get_by_role("navigation", name="Main")
    partners = nav.get_by_role("link", name="Partners", exact=True)
    expect(partners).to_be_hidden()

    nav.get_by_role("checkbox", name="Menu").focus()
    page.keyboard.press("Space")
    expect(partners).to_be_visible()
    partners.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Partners")


def test_a_new_api_key_fits_375px(mobile_page, screenshot_dir):
    page = mobile_page("admin")
    page.goto("/admin/api-keys")
    page.get_by_label("Name").fill("Mobile check: the shop's order service (EU cluster)")
    page.get_by_role("button", name="Create the key").click()
    expect(page.get_by_test_id("new-key")).to_have_value(re.compile(r"^ppk_"))
    expect(page.get_by_test_id("new-key")).to_be_in_viewport()
    _assert_no_sideways_scroll(page, "showing the new key")
    page.screenshot(path=screenshot_dir / "admin_api-keys-new-key.png", full_page=True)


def test_an_approved_payout_batch_fits_375px_with_its_record_forms_open(
    mobile_page, payout_showcase, screenshot_dir
):
    page = mobile_page("manager")
    page.goto(f"/admin/payouts/{payout_showcase.batch_id}")
    expect(page.get_by_test_id("batch-status")).to_contain_text("approved — being paid")
    summaries = page.get_by_test_id("items").locator("details > summary")
    expect(summaries).to_have_count(len(payout_showcase.payable_partner_ids))
    for summary in summaries.all():
        summary.click()
    for details in page.get_by_test_id("items").locator("details").all():
        expect(details).to_have_attribute("open", "")
        expect(details.get_by_role("button", name="Paid")).to_be_visible()
        expect(details.get_by_role("button", name="Failed — back to balance")).to_be_visible()
    _assert_no_sideways_scroll(page, "with every record form open")
    page.screenshot(path=screenshot_dir / "manager_admin_payouts_batch-forms-open.png", full_page=True)


def test_payout_details_with_errors_fit_375px(mobile_page, live_server, screenshot_dir):
    with live_server.app.app_context():
        _partner, email = create_partner("Mobile Payout Details", "mobile-payout")
        db.session.commit()
    page = mobile_page()
    sign_in(page, email, APPLICANT_PASSWORD)
    page.goto("/partner/payout-details")
    page.get_by_label("Bank transfer (IBAN)").check()
    page.get_by_label("IBAN", exact=True).fill("DE89 3704 0044 0532 0130 01 0000 0000 0000 00")
    page.get_by_role("button", name="Save payout details").click()
    expect(page.locator("#account_holder-error")).to_be_visible()
    _assert_no_sideways_scroll(page, "showing the field errors")
    page.screenshot(path=screenshot_dir / "partner_payout-details-errors.png", full_page=True)
