"""The partner dashboard's first screen answers "what will I be paid, and when" at 1280 × 800 and
375 × 740; a new partner's checklist ticks itself; screenshots of the dashboard and the earnings
page at both widths go to $PORTAL_E2E_SCREENSHOTS (``partner-first-screen/``) with the measured
page heights (``heights.json``)."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from portal.extensions import db
from tests.e2e.support import APPLICANT_PASSWORD, DESKTOP, MOBILE, create_partner, sign_in

pytestmark = pytest.mark.e2e

WIDTHS = [DESKTOP, MOBILE]
WIDTH_IDS = ["1280", "375"]

# Where an element sits on the page (document coordinates), and how tall the page is.
_BOX = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const box = el.getBoundingClientRect();
  return {top: box.top + window.scrollY, bottom: box.bottom + window.scrollY};
}"""
_HEIGHT = "() => document.documentElement.scrollHeight"


@pytest.fixture(scope="module")
def shots(screenshot_dir):
    folder = screenshot_dir / "partner-first-screen"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _in_first_screen(page: Page, selector: str, viewport: dict) -> None:
    box = page.evaluate(_BOX, selector)
    assert box is not None, f"{selector} is not on {page.url}"
    assert box["bottom"] <= viewport["height"], (
        f"{selector} ends at {box['bottom']:.0f} px, "
        f"below the first {viewport['height']} px at {viewport['width']} px"
    )


def _record_height(shots, name: str, viewport: dict, height: int) -> None:
    path = shots / "heights.json"
    heights = json.loads(path.read_text()) if path.exists() else {}
    heights[f"{name}-{viewport['width']}"] = height
    path.write_text(json.dumps(heights, indent=2, sort_keys=True))


@pytest.mark.parametrize("viewport", WIDTHS, ids=WIDTH_IDS)
def test_the_payout_sentence_balances_link_and_messages_come_first(new_context, viewport, shots):
    page = new_context(role="partner", viewport=viewport).new_page()
    page.goto("/partner/")
    sentence = page.get_by_test_id("payout-sentence")
    expect(sentence).to_be_visible()
    # An amount and a date, or the reason there is none — never an empty heading.
    expect(sentence).to_have_text(re.compile(r"\$[\d,]+\.\d\d"))
    for selector in (
        '[data-testid="payout-sentence"]',
        '[data-testid="balance-pending"]',
        '[data-testid="balance-paid"]',
    ):
        _in_first_screen(page, selector, viewport)
    # ... then the partner's link with its copy button, and the messages
    _in_first_screen(page, '[data-testid="partner-link"]', viewport)
    _in_first_screen(page, "#news-heading", viewport)
    link = page.get_by_test_id("partner-link")
    expect(link).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/go/demo$"))
    # only one navigation on the page
    expect(page.locator("nav.subnav")).to_have_count(0)
    page.wait_for_load_state("networkidle")
    _record_height(shots, "dashboard", viewport, page.evaluate(_HEIGHT))
    page.screenshot(path=shots / f"partner-dashboard-{viewport['width']}.png", full_page=True)


@pytest.mark.parametrize("viewport", WIDTHS, ids=WIDTH_IDS)
def test_the_earnings_page_says_the_same_sentence(new_context, viewport, shots):
    page = new_context(role="partner", viewport=viewport).new_page()
    page.goto("/partner/")
    said = page.get_by_test_id("payout-sentence").inner_text()
    page.goto("/partner/earnings")
    expect(page.get_by_test_id("payout-sentence")).to_have_text(said)
    _in_first_screen(page, '[data-testid="payout-sentence"]', viewport)
    page.wait_for_load_state("networkidle")
    _record_height(shots, "earnings", viewport, page.evaluate(_HEIGHT))
    page.screenshot(path=shots / f"partner-earnings-{viewport['width']}.png", full_page=True)


def test_a_new_partners_checklist_ticks_itself(new_context, live_server, shots):
    with live_server.app.app_context():
        partner, email = create_partner("Fjällräven Trail Diaries", "checklist")
        db.session.commit()
        code = partner.ref_code
    context = new_context(viewport=MOBILE)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    sign_in(page, email, APPLICANT_PASSWORD)
    page.goto("/partner/")
    checklist = page.get_by_test_id("checklist")
    expect(checklist).to_be_visible()
    for step in ("payout_details", "copy_link", "grab_creative", "read_terms"):
        expect(page.get_by_test_id(f"step-{step}")).to_have_attribute("data-done", "no")
    # A newly approved partner sees why there is no payout yet, in one sentence.
    expect(page.get_by_test_id("payout-sentence")).to_contain_text(
        "$50.00 more to reach the $50.00 minimum, and add your payout details."
    )
    page.screenshot(path=shots / "new-partner-dashboard-375.png", full_page=True)

    # Copy the link: the button says so, and the step ticks.
    expect(page.get_by_test_id("partner-link")).to_have_value(re.compile(rf"/go/{code}$"))
    with page.expect_response(lambda r: "/partner/onboarding/copy_link" in r.url) as answer:
        page.locator("#partner-link + button").click()
    assert answer.value.status == 204
    page.reload()
    expect(page.get_by_test_id("step-copy_link")).to_have_attribute("data-done", "yes")

    # Read the terms.
    page.get_by_test_id("step-read_terms").get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Program terms")
    page.goto("/partner/")
    expect(page.get_by_test_id("step-read_terms")).to_have_attribute("data-done", "yes")

    # Grab a creative: copy its code straight from the library grid.
    page.get_by_test_id("step-grab_creative").get_by_role("link").click()
    expect(page.get_by_test_id("grid-code").first).to_be_visible()
    with page.expect_response(lambda r: "/partner/onboarding/grab_creative" in r.url):
        page.get_by_role("button", name=re.compile(r"^Copy the code for ")).first.click()
    page.goto("/partner/")
    expect(page.get_by_test_id("step-grab_creative")).to_have_attribute("data-done", "yes")

    # Payout details: the last step; the checklist goes away.
    page.get_by_test_id("step-payout_details").get_by_role("link").click()
    page.get_by_label("PayPal", exact=True).check()
    page.get_by_label("PayPal e-mail").fill("fjallraven-diaries@example.org")
    page.get_by_label("Your current password").fill(APPLICANT_PASSWORD)
    page.get_by_role("button", name=re.compile("Save")).click()
    page.goto("/partner/")
    expect(page.get_by_test_id("checklist")).to_have_count(0)
    expect(page.get_by_test_id("payout-sentence")).to_contain_text("$50.00 more to reach the $50.00 minimum.")


def test_the_library_previews_pages_and_videos_by_title_not_address(new_context):
    page = new_context(role="partner").new_page()
    page.goto("/partner/creatives")
    previews = page.get_by_test_id("page-preview")
    expect(previews.first).to_be_visible()
    for text in previews.all_inner_texts():
        assert "https://" not in text, text
    expect(page.get_by_test_id("library")).to_contain_text("Pitching the Ridge 2 in 60 seconds")
    expect(page.get_by_test_id("library")).to_contain_text("video.northwind-outdoor.example")
