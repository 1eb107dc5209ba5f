"""QR codes on the partner's links page, in a real browser at 375 px: the previews load under
the CSP, and the downloads arrive as files with their names."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.extensions import db
from portal.services import coupons
from portal.services.links import create_link
from portal.services.program import get_program
from tests.e2e.support import APPLICANT_PASSWORD, MOBILE, create_partner, sign_in, unique_id

pytestmark = pytest.mark.e2e


def test_previews_load_and_downloads_arrive_at_375px(new_context, live_server):
    code = unique_id("qr").upper()
    with live_server.app.app_context():
        partner, email = create_partner("Quinn Rhodes", "qr")
        link = create_link(partner, get_program(), label="Trailhead flyer", channel="social")
        coupons.add_coupon(partner, code, None)
        link_code = link.code
        db.session.commit()
    page = new_context(viewport=MOBILE, accept_downloads=True).new_page()
    sign_in(page, email, APPLICANT_PASSWORD)
    page.goto("/partner/links")
    previews = [
        page.get_by_role("img", name="QR code for your main link"),
        page.get_by_role("img", name="QR code for Trailhead flyer"),
        page.get_by_role("img", name=f"QR code for {code}"),
    ]
    for preview in previews:
        preview.scroll_into_view_if_needed()
        expect(preview).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
        box = preview.bounding_box()
        assert box is not None and box["x"] + box["width"] <= MOBILE["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]

    with page.expect_download() as svg:
        page.get_by_role("link", name=f"SVG ({code})").click()
    assert svg.value.suggested_filename == f"coupon-{code}-qr.svg"
    with page.expect_download() as png:
        page.get_by_role("link", name="PNG (Trailhead flyer)").click()
    assert png.value.suggested_filename == f"link-{link_code}-qr.png"
