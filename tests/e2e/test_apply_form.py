"""The application form's errors, as a visitor meets them in the browser."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import APPLICANT_PASSWORD, DEMO_EMAILS, unique_email

pytestmark = pytest.mark.e2e


def _fill_application(page: Page, *, name: str, email: str, confirm: str, description: str) -> None:
    page.goto("/apply")
    page.get_by_label("Your name or company").fill(name)
    page.get_by_label("E-mail", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(APPLICANT_PASSWORD)
    page.get_by_label("Repeat the password").fill(confirm)
    page.get_by_label("Website").fill("https://grace-outdoors.example")
    page.get_by_label("Social media").check()
    page.get_by_label("Tell us about your audience").fill(description)
    page.get_by_label("Country").select_option("GB")
    page.get_by_role("button", name="Send my application").click()


def test_bad_input_shows_field_errors_and_keeps_what_was_typed(page, live_server):
    email = unique_email("typo")
    _fill_application(
        page,
        name="Grace Outdoors Ltd",
        email=email,
        confirm=APPLICANT_PASSWORD + "!",
        description="Too short.",
    )

    expect(page).to_have_url(live_server("/apply"))
    expect(page.locator("#confirm-error")).to_contain_text("The two passwords differ.")
    expect(page.locator("#promotion_description-error")).to_contain_text("Between 20 and 2000 characters.")
    expect(page.get_by_label("Repeat the password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Tell us about your audience")).to_have_attribute("aria-invalid", "true")

    expect(page.get_by_label("Your name or company")).to_have_value("Grace Outdoors Ltd")
    expect(page.get_by_label("E-mail", exact=True)).to_have_value(email)
    expect(page.get_by_label("Website")).to_have_value("https://grace-outdoors.example")
    expect(page.get_by_label("Tell us about your audience")).to_have_value("Too short.")
    expect(page.get_by_label("Social media")).to_be_checked()
    expect(page.get_by_label("Country")).to_have_value("GB")
    # Passwords are never sent back into the page.
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    assert live_server.partner_id(email) is None


def test_a_taken_email_gets_the_answer_a_new_one_gets(page, live_server):
    _fill_application(
        page,
        name="Someone Else",
        email=DEMO_EMAILS["partner"],
        confirm=APPLICANT_PASSWORD,
        description="Outdoor family blog with weekly trip reports and gear lists.",
    )

    # No "already exists": the form does not tell who has an account (the owner gets an e-mail).
    expect(page.get_by_role("heading", name="Thank you! Your application is in")).to_be_visible()
    expect(page.get_by_text("already exists")).to_have_count(0)
