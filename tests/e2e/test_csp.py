"""The Content-Security-Policy in a real Chromium: the portal's pages work under it, and what it
forbids is both blocked and reported (every e2e test fails on a violation, see conftest.watch_csp)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_an_injected_inline_script_is_blocked_and_caught(page, live_server):
    page.goto("/login")
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.appendChild(script);
            const image = document.createElement("img");
            image.src = "https://evil.example/pixel.png";
            document.body.appendChild(image);
        }"""
    )
    page.wait_for_function("true")  # let the violation events reach the console
    expect(page.locator("body")).to_be_visible()
    assert page.evaluate("window.injected === undefined")
    page.wait_for_timeout(200)
    seen = list(live_server.csp_violations)
    live_server.csp_violations.clear()  # expected here; any other test fails on them
    assert any("script-src" in line for line in seen), seen
    assert any("img-src" in line and "evil.example" in line for line in seen), seen


def test_the_portal_cannot_be_framed(page, live_server):
    page.set_content(f'<iframe src="{live_server.url}/login" id="framed"></iframe>')
    frame = page.frame_locator("#framed")
    expect(frame.locator("input[name=email]")).to_have_count(0)
    live_server.csp_violations.clear()  # Chromium reports the blocked frame on this data: page
