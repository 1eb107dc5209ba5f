"""An application's whole life in the browser: apply, review by a manager, the applicant's view."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import APPLICANT_PASSWORD, DEMO_EMAILS, sign_in, unique_email

pytestmark = pytest.mark.e2e

# Set on window before an htmx action; still there afterwards means the page never reloaded.
_MARK_PAGE = "window.__e2eSamePage = true"
_SAME_PAGE = "window.__e2eSamePage === true"


def _review(page: Page):
    return page.locator("#partner-review")


def _status_badge(page: Page):
    return _review(page).get_by_test_id("partner-status").locator(".badge")


def test_applicant_is_approved_and_reaches_the_dashboard(new_context, live_server):
    email = unique_email("approved")
    name = "Ada Trails Media"

    # The visitor applies.
    applicant = new_context().new_page()
    applicant.goto("/apply")
    applicant.get_by_label("Your name or company").fill(name)
    applicant.get_by_label("E-mail", exact=True).fill(email)
    applicant.get_by_label("Password", exact=True).fill(APPLICANT_PASSWORD)
    applicant.get_by_label("Repeat the password").fill(APPLICANT_PASSWORD)
    applicant.get_by_label("Website").fill("https://ada-trails.example")
    applicant.get_by_label("SEO / content site").check()
    applicant.get_by_label("Video").check()
    applicant.get_by_label("Tell us about your audience").fill(
        "Trail running guides and gear tests, 12k readers a month, mostly in Germany."
    )
    applicant.get_by_label("Country").select_option("DE")
    applicant.get_by_role("button", name="Send my application").click()

    # The same answer as for an address that has an account; the applicant then signs in.
    expect(applicant.get_by_role("heading", name="Thank you! Your application is in")).to_be_visible()
    sign_in(applicant, email, APPLICANT_PASSWORD)
    expect(applicant).to_have_url(live_server("/status"))
    expect(applicant.get_by_role("heading", name="Your application")).to_be_visible()
    expect(applicant.locator("main .badge")).to_have_text(re.compile(r"waiting for review"))

    # A manager, in another browser, signs in and finds the application.
    manager = new_context().new_page()
    sign_in(manager, DEMO_EMAILS["manager"])
    expect(manager).to_have_url(live_server("/admin/"))
    manager.get_by_role("navigation", name="Main").get_by_role("link", name="Applications").click()
    expect(manager.get_by_role("heading", name="Applications waiting for review")).to_be_visible()
    manager.get_by_role("link", name=name).click()
    expect(manager.get_by_role("heading", level=1)).to_have_text(name)
    expect(_status_badge(manager)).to_have_text(re.compile(r"waiting for review"))
    ref_code = manager.locator("dt:has-text('Partner code') + dd").inner_text().strip()
    assert re.fullmatch(r"[a-z2-9]{8}", ref_code)

    # Approve swaps the review card in place (htmx), without reloading the page. htmx wires the
    # form up when the page has loaded: a click before that would post it the plain way.
    manager.wait_for_load_state("load")
    manager.wait_for_function("() => window.htmx !== undefined")
    manager.evaluate(_MARK_PAGE)
    with manager.expect_response(re.compile(r"/approve$")) as approved:
        _review(manager).get_by_role("button", name="Approve").click()
    assert approved.value.status == 200
    assert approved.value.request.headers.get("hx-request") == "true"
    expect(_status_badge(manager)).to_have_attribute("data-status", "approved")
    expect(_status_badge(manager)).to_have_text(re.compile(r"approved"))
    expect(_review(manager).get_by_text(f"{name} is approved.")).to_be_visible()
    expect(_review(manager).locator(".timeline")).to_contain_text("approved · Morgan Manager")
    expect(_review(manager).get_by_role("button", name="Suspend")).to_be_visible()
    assert manager.evaluate(_SAME_PAGE), "approving reloaded the page instead of swapping #partner-review"

    # The applicant, still signed in, now has an (empty) dashboard with their code.
    applicant.goto("/partner/")
    expect(applicant).to_have_url(live_server("/partner/"))
    expect(applicant.get_by_role("heading", level=1)).to_have_text(f"Welcome, {name}")
    expect(applicant.get_by_test_id("ref-code")).to_have_text(ref_code)
    # the automatic welcome is waiting on the dashboard, and the numbers start at zero
    expect(applicant.get_by_test_id("dashboard-thread")).to_contain_text(
        f"Welcome to Northwind Outdoor, {name}"
    )
    expect(applicant.get_by_test_id("unread-count")).to_have_text("1")
    expect(applicant.get_by_test_id("fig-clicks")).to_have_text("0")
    expect(
        applicant.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard")
    ).to_be_visible()


def test_rejected_applicant_sees_the_reason(new_context, make_applicant, live_server):
    partner_id, email = make_applicant("rejected")
    # Quotes, an ampersand and angle brackets: the reason must come back exactly, escaped.
    reason = "Your site “Paddle Notes” has no posts since 2023 & no <about> page — apply again once it does."

    manager = new_context(role="manager").new_page()
    manager.goto(f"/admin/partners/{partner_id}")
    _review(manager).get_by_label("Reason shown to the applicant").fill(reason)
    _review(manager).get_by_role("button", name="Do not accept").click()
    expect(_status_badge(manager)).to_have_attribute("data-status", "rejected")
    expect(_status_badge(manager)).to_have_text(re.compile(r"not accepted"))
    expect(_review(manager).get_by_text(f"Reason given: {reason}")).to_be_visible()

    applicant = new_context().new_page()
    sign_in(applicant, email, APPLICANT_PASSWORD)
    expect(applicant).to_have_url(live_server("/status"))
    expect(applicant.locator("main .badge")).to_have_text(re.compile(r"not accepted"))
    expect(applicant.locator(".reason p")).to_have_text(reason)
    # A rejected applicant has no dashboard.
    applicant.goto("/partner/")
    expect(applicant).to_have_url(live_server("/status"))


def test_rejecting_without_a_reason_shows_the_error_in_place(new_context, make_applicant, live_server):
    partner_id, _email = make_applicant("no-reason")
    manager = new_context(role="manager").new_page()
    manager.goto(f"/admin/partners/{partner_id}")
    manager.evaluate(_MARK_PAGE)

    with manager.expect_response(re.compile(r"/reject$")) as refused:
        _review(manager).get_by_role("button", name="Do not accept").click()
    assert refused.value.status == 422
    reason = _review(manager).get_by_label("Reason shown to the applicant")
    expect(_review(manager).locator("#reason-error")).to_contain_text("Say why")
    expect(reason).to_have_attribute("aria-invalid", "true")
    expect(_status_badge(manager)).to_have_text(re.compile(r"waiting for review"))
    assert manager.evaluate(_SAME_PAGE), "the 422 answer replaced the page instead of the review card"
    assert live_server.partner_status(partner_id) == ("applied", None)

    # The swapped-in form works: with a reason the rejection goes through.
    reason.fill("Coupon sites are outside the program terms.")
    _review(manager).get_by_role("button", name="Do not accept").click()
    expect(_status_badge(manager)).to_have_attribute("data-status", "rejected")
    assert live_server.partner_status(partner_id) == (
        "rejected",
        "Coupon sites are outside the program terms.",
    )


def test_htmx_sends_the_csrf_token_from_the_body_header(new_context, make_applicant, live_server):
    partner_id, _email = make_applicant("csrf")
    manager = new_context(role="manager").new_page()
    manager.goto(f"/admin/partners/{partner_id}")
    body_token = manager.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
    assert body_token

    # Without any token the server refuses: CSRF protection is really on.
    status = manager.evaluate(
        "async url => (await fetch(url, {method: 'POST', headers: {'HX-Request': 'true'}})).status",
        f"/admin/partners/{partner_id}/approve",
    )
    assert status == 400
    assert live_server.partner_status(partner_id)[0] == "applied"

    # Remove the form's own hidden token: only <body hx-headers> can carry it now.
    approve_form = _review(manager).locator("form[hx-post$='/approve']")
    approve_form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    with manager.expect_response(re.compile(r"/approve$")) as approved:
        approve_form.get_by_role("button", name="Approve").click()
    request = approved.value.request
    assert request.headers.get("x-csrftoken") == body_token
    assert "csrf_token" not in (request.post_data or "")
    assert approved.value.status == 200
    expect(_status_badge(manager)).to_have_attribute("data-status", "approved")
    assert live_server.partner_status(partner_id)[0] == "approved"
