"""Two-factor sign-in in the browser, 375 px wide: an admin enrols with the QR page's key, signs
in with a code, then with a recovery code; a wrong code is refused and counted."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from portal.extensions import db
from portal.models import AuditEvent, Role, User
from portal.services import accounts
from tests.e2e.support import APPLICANT_PASSWORD, MOBILE, unique_email
from tests.e2e.test_mobile_layout import _assert_no_sideways_scroll

pytestmark = pytest.mark.e2e


def _failures(live_server, email: str) -> int:
    with live_server.app.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.email == email))
        return db.session.scalar(
            sa.select(sa.func.count()).where(
                AuditEvent.action == "user.2fa_failed", AuditEvent.subject_id == user_id
            )
        )


def _password_step(page: Page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail", exact=True).fill(email)
    page.get_by_label("Password").fill(APPLICANT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def _sign_out(page: Page) -> None:
    nav = page.get_by_role("navigation", name="Main")
    nav.locator("summary.nav-menu-toggle").click()  # the menu is folded at 375 px
    nav.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))


def test_an_admin_enrols_then_signs_in_with_a_code_and_with_a_recovery_code(
    new_context, live_server, screenshot_dir
):
    email = unique_email("two-factor-admin")
    with live_server.app.app_context():
        accounts.create_user(email, "Tova Factor", APPLICANT_PASSWORD, Role.ADMIN)
        db.session.commit()
    page = new_context(viewport=MOBILE).new_page()

    # Signed in with the password only, the admin opens the account page.
    _password_step(page, email)
    expect(page).to_have_url(live_server("/admin/"))
    page.goto("/account")
    status = page.get_by_test_id("two-factor-status")
    expect(status).to_contain_text("Off")
    _assert_no_sideways_scroll(page, "account page, two-factor off")
    page.get_by_role("button", name="Set up two-factor sign-in").click()

    # The set-up page: a QR code drawn on the server, the key in text, a first code to confirm.
    expect(page).to_have_url(live_server("/account/two-factor/setup"))
    expect(page.locator("figure.qr-code svg")).to_be_visible()
    expect(page.get_by_text("Status: not on yet.")).to_be_visible()
    _assert_no_sideways_scroll(page, "set-up page")
    page.screenshot(path=screenshot_dir / "two-factor-setup.png", full_page=True)
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Switch on two-factor sign-in").click()

    # Ten recovery codes, shown once.
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.get_by_text("Two-factor sign-in is on.")).to_be_visible()
    codes = [code.strip() for code in page.get_by_test_id("recovery-codes").locator("code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    _assert_no_sideways_scroll(page, "recovery codes")
    page.screenshot(path=screenshot_dir / "two-factor-recovery-codes.png", full_page=True)
    page.get_by_role("link", name="I have saved them").click()
    expect(status).to_contain_text("On")
    expect(page.get_by_text("10 unused recovery codes left.")).to_be_visible()
    _assert_no_sideways_scroll(page, "account page, two-factor on")
    page.screenshot(path=screenshot_dir / "account-two-factor-on.png", full_page=True)

    # Signing in now takes a code after the password; a wrong one is refused and counted.
    _sign_out(page)
    _password_step(page, email)
    expect(page).to_have_url(live_server("/login/code"))
    expect(page.get_by_text("You are not signed in yet")).to_be_visible()
    _assert_no_sideways_scroll(page, "code page")
    page.get_by_label("Code").fill("000000" if totp.now() != "000000" else "111111")
    page.get_by_role("button", name="Check the code").click()
    expect(page.locator("#code-error")).to_contain_text(
        "That code is not right. 4 more tries before sign-in pauses."
    )
    expect(page).to_have_url(live_server("/login/code"))
    assert _failures(live_server, email) == 1
    _assert_no_sideways_scroll(page, "code page with an error")
    page.screenshot(path=screenshot_dir / "two-factor-code-wrong.png", full_page=True)

    # The enrolment used this 30-second step's code, so the app's next code (accepted one step
    # early, for clock drift) signs in without waiting.
    page.get_by_label("Code").fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Check the code").click()
    expect(page).to_have_url(live_server("/admin/"))

    # Phone lost: a recovery code instead, once.
    _sign_out(page)
    _password_step(page, email)
    expect(page).to_have_url(live_server("/login/code"))
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Check the code").click()
    expect(page).to_have_url(live_server("/admin/"))
    expect(page.get_by_text("You signed in with a recovery code. 9 recovery codes are left.")).to_be_visible()
    assert _failures(live_server, email) == 1
