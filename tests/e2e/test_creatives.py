"""Creatives in the browser: a manager publishes a banner, a partner pastes its code, a shopper clicks.

Also the bulk uploader's progress, and every creative page at 375 px.
"""

from __future__ import annotations

import html
import itertools
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from portal.extensions import db
from portal.models import Click, Creative, Partner
from tests.e2e.support import ACTION_TIMEOUT_MS, MOBILE
from tests.e2e.test_mobile_layout import _assert_no_sideways_scroll
from tests.images import WINDOWS_PROGRAM, png

pytestmark = pytest.mark.e2e

# A shopper's ordinary browser (headless Chromium names itself, and the portal counts it as a bot).
SHOPPER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36"
)
SHOP = "https://shop.northwind-outdoor.example/"
_numbers = itertools.count(1)


@pytest.fixture
def partner_blog() -> Iterator[tuple[str, dict]]:
    """Another site on this machine (another origin) whose page shows ``page["html"]``: where a
    partner pastes their code. Chromium lets a page reach 127.0.0.1 only from the same address space."""
    page = {"html": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/autumn-gear", page
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _upload_banner(manager: Page, name: str, channel_label: str) -> int:
    manager.goto("/admin/creatives")
    manager.get_by_role("link", name="+ Banner").click()
    manager.get_by_label("Name", exact=True).fill(name)
    manager.get_by_label(channel_label).check()
    manager.get_by_label("Banner image").set_input_files(
        {"name": "social-square.png", "mimeType": "image/png", "buffer": png((300, 250))}
    )
    manager.get_by_role("button", name="Save the draft").click()
    expect(manager.get_by_role("heading", level=1)).to_have_text(name)
    expect(manager.locator("main .badge").first).to_have_text(re.compile("draft"))
    manager.get_by_role("button", name="Publish").click()
    expect(manager.locator("main .badge").first).to_have_text(re.compile("published"))
    return int(re.search(r"/admin/creatives/(\d+)$", manager.url).group(1))


def test_a_published_social_banner_is_pasted_by_a_partner_and_its_click_is_counted(
    new_context, browser, live_server, partner_blog
):
    name = f"E2E social square {next(_numbers)}"
    manager = new_context(role="manager").new_page()
    creative_id = _upload_banner(manager, name, "Social media")

    # The partner filters the library to social and copies the banner's embed code.
    partner_context = new_context(role="partner")
    partner_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    partner = partner_context.new_page()
    partner.goto("/partner/creatives")
    partner.get_by_label("Channel").select_option("social")
    partner.get_by_role("button", name="Show").click()
    expect(partner).to_have_url(re.compile(r"[?&]channel=social"))
    cards = partner.get_by_test_id("library").locator("[data-creative]")
    expect(cards.first).to_be_visible()
    for facts in cards.locator(".creative-facts").all_inner_texts():
        assert "Social media" in facts
    card = partner.locator(f"[data-creative='{creative_id}']")
    # The code can be copied straight from the grid...
    card.get_by_role("button", name=f"Copy the code for {name}").click()
    grid_code = card.get_by_test_id("grid-code").input_value()
    assert partner.evaluate("navigator.clipboard.readText()") == grid_code
    # ... or from the creative's own page, with every form of it.
    card.get_by_role("link", name=f"More on {name}").click()
    expect(partner.get_by_role("heading", level=1)).to_have_text(name)
    partner.get_by_role("button", name="Copy the HTML").click()
    expect(partner.locator("[data-copy='#code-embed']")).to_have_text("Copied ✔")
    embed = partner.evaluate("navigator.clipboard.readText()")
    assert embed == partner.get_by_test_id("embed-code").input_value() == grid_code
    link = html.unescape(re.search(r'<a href="([^"]+)"', embed).group(1))
    assert link == f"{live_server.url}/go/demo?creative={creative_id}"

    # The partner pastes it into their blog; a shopper reads the blog and clicks the banner.
    blog_url, blog_page = partner_blog
    blog_page["html"] = f"<!doctype html><title>Trail stories</title><h1>Autumn gear</h1><p>{embed}</p>"
    shopper_context = browser.new_context(user_agent=SHOPPER_AGENT)
    try:
        shopper_context.set_default_timeout(ACTION_TIMEOUT_MS)
        # The shop is not on this machine: the browser gets a stand-in page for it.
        shopper_context.route(
            f"{SHOP}**", lambda route: route.fulfill(content_type="text/html", body="<h1>Northwind shop</h1>")
        )
        blog = shopper_context.new_page()
        blog.goto(blog_url)
        banner = blog.get_by_role("img", name=name)
        expect(banner).to_have_js_property("naturalWidth", 300)  # the image address works off-site
        with shopper_context.expect_page() as opened:
            banner.click()
        shop = opened.value
        expect(shop).to_have_url(
            re.compile(r"^https://shop\.northwind-outdoor\.example/\?ref=demo&click_id=[\w-]{32}$")
        )
        expect(shop.get_by_role("heading")).to_have_text("Northwind shop")
        click_id = parse_qs(urlsplit(shop.url).query)["click_id"][0]
    finally:
        shopper_context.close()

    with live_server.app.app_context():
        click = db.session.get(Click, click_id)
        demo = db.session.scalars(sa.select(Partner).where(Partner.ref_code == "demo")).one()
        assert (click.creative_id, click.partner_id, click.is_bot) == (creative_id, demo.id, False)

    # The partner sees the click against that creative.
    partner.goto("/partner/creatives/stats")
    row = partner.get_by_test_id("my-creative-stats").locator(f"tr[data-creative='{creative_id}']")
    expect(row.locator("[data-figure=clicks]")).to_have_text("1")


def test_bulk_upload_shows_progress_and_a_line_per_file(new_context, live_server):
    manager = new_context(role="manager").new_page()
    manager.goto("/admin/creatives/bulk")
    batch = next(_numbers)
    manager.get_by_label("Banner images").set_input_files(
        [
            {"name": f"e2e-bulk-{batch}-square.png", "mimeType": "image/png", "buffer": png((300, 250))},
            {"name": f"e2e-bulk-{batch}-setup.png", "mimeType": "image/png", "buffer": WINDOWS_PROGRAM},
            {"name": f"e2e-bulk-{batch}-wide.png", "mimeType": "image/png", "buffer": png((728, 90))},
        ]
    )
    manager.get_by_label("Paid ads").check()
    uploads = []
    manager.on("request", lambda r: uploads.append(r) if r.method == "POST" else None)
    manager.get_by_role("button", name="Upload").click()

    label = manager.locator("#bulk-progress-label")
    expect(label).to_have_text("Finished: 2 of 3 uploaded.")
    expect(manager.locator("#bulk-progress-bar")).to_have_js_property("value", 100)
    results = manager.locator("#bulk-results")
    expect(results.locator("[data-outcome=saved]")).to_have_count(2)
    expect(results.locator("[data-outcome=refused]")).to_contain_text(
        f"“e2e-bulk-{batch}-setup.png” is not an image: its content is a Windows program."
    )
    assert len(uploads) == 3  # one request per file, each with its own result
    assert manager.url == live_server("/admin/creatives/bulk")
    with live_server.app.app_context():
        names = db.session.scalars(sa.select(Creative.name).where(Creative.name.like(f"E2e bulk {batch} %")))
        assert sorted(names) == [f"E2e bulk {batch} square", f"E2e bulk {batch} wide"]


# --- 375 px ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_banner_id(live_server) -> int:
    with live_server.app.app_context():
        return db.session.scalar(
            sa.select(Creative.id).where(Creative.kind == "banner", Creative.status == "published").limit(1)
        )


PAGES = {
    "partner": ["/partner/creatives", "/partner/creatives/<banner>", "/partner/creatives/stats"],
    "manager": [
        "/admin/creatives",
        "/admin/creatives/new/banner",
        "/admin/creatives/<banner>",
        "/admin/creatives/bulk",
        "/admin/creatives/stats",
    ],
}


@pytest.mark.parametrize("role", sorted(PAGES))
def test_creative_pages_fit_375px(role, mobile_page, demo_banner_id, screenshot_dir):
    page = mobile_page(role)
    for path in PAGES[role]:
        path = path.replace("<banner>", str(demo_banner_id))
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        expect(page.locator("h1")).to_be_visible()
        assert page.viewport_size == MOBILE
        _assert_no_sideways_scroll(page, "as loaded")
        page.screenshot(path=screenshot_dir / f"creatives-{role}{path.replace('/', '_')}.png", full_page=True)
