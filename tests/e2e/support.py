"""What the end-to-end tests share: browser settings, sizes, sign-in."""

from __future__ import annotations

import itertools
import re

from playwright.sync_api import Page, expect

from portal.demo import DEMO_PASSWORD

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Belt and braces: the browser may only ever reach the live server.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 375, "height": 740}
# Generous for a loaded CI machine, short enough that a hang fails fast.
EXPECT_TIMEOUT_MS = 5_000
ACTION_TIMEOUT_MS = 10_000

# Applicants the tests create sign in with this (long, not guessable from the account).
APPLICANT_PASSWORD = "river-stone-lantern"

DEMO_EMAILS = {
    "partner": "partner@example.com",
    "manager": "manager@example.com",
    "admin": "admin@example.com",
}


_sequence = itertools.count(1)


def unique_email(label: str) -> str:
    return f"e2e-{label}-{next(_sequence)}@example.org"


def sign_in(page: Page, email: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the real form (its CSRF token included) and wait to land."""

    page.goto("/login")
    page.get_by_label("E-mail", exact=True).fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"))
