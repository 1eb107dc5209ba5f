"""The live-updates indicator: the page's Socket.IO connection, over a real websocket."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.support import EXPECT_TIMEOUT_MS

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("role", "path"), [("partner", "/partner/"), ("manager", "/admin/")])
def test_signed_in_pages_go_live_over_a_websocket(new_context, role, path):
    page = new_context(role=role).new_page()
    page.goto(path)

    status = page.locator("#live-status")
    expect(status).to_have_attribute("data-state", "live")
    expect(status.locator(".live-text")).to_have_text("Live updates on")
    # Socket.IO may start on long-polling; it must end up on the websocket.
    page.wait_for_function(
        "window.portalSocket.io.engine.transport.name === 'websocket'", timeout=EXPECT_TIMEOUT_MS
    )


def test_anonymous_pages_do_not_open_a_socket(page):
    page.goto("/login")
    expect(page.locator("#live-status")).to_have_count(0)
    assert page.evaluate("typeof window.io") == "undefined"
