"""Every page a role can reach by following links, at 1280 and 375 px: nothing scrolls sideways and
axe-core finds no violation.

The crawler signs in as the demo partner, manager and admin, starts at the role's home and follows
every same-origin link it finds (breadth first, a bounded number of pages, at most a few query
variants of each path), never sign-out, downloads, CSV exports, stored files, the click redirect or
the API. A failing page is named with what is too wide or which axe rules fail and where.
"""

from __future__ import annotations

import os
import re
from collections import deque
from urllib.parse import urldefrag, urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.e2e.support import DESKTOP, MOBILE

pytestmark = pytest.mark.e2e

START = {"partner": "/partner/", "manager": "/admin/", "admin": "/admin/"}
# Enough for every page of the demo program; raise it to crawl deeper.
MAX_PAGES = int(os.environ.get("PORTAL_CRAWL_MAX_PAGES", "90"))
# At most this many addresses of one path (other query strings: filters, periods, pages).
MAX_VARIANTS = 2
SKIP = re.compile(
    r"^/(logout|go/|api/|static/|media/|socket\.io|csp-report|healthz|readyz|livez)"
    r"|\.(csv|json|txt|png|jpe?g|gif|webp|zip)($|\?)"
    r"|/(export|download)",
)
# axe-core goes into every page of the crawl's context as an init script, before the page's own
# scripts (CSP does not apply to it), instead of being sent over with an evaluate per page: 550 kB
# each time. The "no-passes" reporter runs the same rules and returns only the violations, not the
# passes it would also build and send back.
AXE_SCRIPT = Axe().axe_script
_AXE_RUN = "() => axe.run(document, {resultTypes: ['violations'], reporter: 'no-passes'})"

# Every element wider than the viewport, named well enough to find in a template.
_WIDE = """() => {
  const width = window.innerWidth;
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 0.5) {
      const classes = typeof el.className === "string" && el.className.trim()
        ? "." + el.className.trim().split(/\\s+/).join(".") : "";
      const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + classes;
      wide.push(name + " (right " + Math.round(box.right) + ")");
    }
  }
  const scrollWidth = document.documentElement.scrollWidth;
  return {scrollWidth: scrollWidth, innerWidth: window.innerWidth, wide: wide.slice(0, 6)};
}"""

_LINKS = """() => Array.from(document.querySelectorAll("a[href]"))
  .filter(a => !a.hasAttribute("download"))
  .map(a => a.href)"""


def _same_origin_path(url: str, origin: str) -> str | None:
    url, _fragment = urldefrag(url)
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != origin:
        return None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return None if SKIP.search(path) else path


def _axe_problems(page: Page) -> list[str]:
    problems = []
    for violation in page.evaluate(_AXE_RUN)["violations"]:
        targets = [", ".join(node["target"]) for node in violation["nodes"][:3]]
        problems.append(f"axe {violation['id']} ({violation['impact']}): {'; '.join(targets)}")
    return problems


def crawl(page: Page, origin: str, start: str, check) -> tuple[list[str], dict[str, list[str]]]:
    """Visit pages breadth first from ``start``; returns (paths visited, {path: problems})."""
    queue = deque([start])
    seen = {start}
    variants: dict[str, int] = {}
    visited: list[str] = []
    problems: dict[str, list[str]] = {}
    while queue and len(visited) < MAX_PAGES:
        path = queue.popleft()
        response = page.goto(path)
        visited.append(path)
        status = response.status if response is not None else 0
        found = [] if status < 400 else [f"answered {status}"]
        if status < 400:
            page.wait_for_load_state("load")
            found += check(page)
        if found:
            problems[path] = found
        for href in page.evaluate(_LINKS):
            target = _same_origin_path(href, origin)
            if target is None or target in seen:
                continue
            base = target.split("?", 1)[0]
            if variants.get(base, 0) >= MAX_VARIANTS:
                continue
            variants[base] = variants.get(base, 0) + 1
            seen.add(target)
            queue.append(target)
    return visited, problems


def _check(page: Page) -> list[str]:
    measured = page.evaluate(_WIDE)
    found = []
    if measured["scrollWidth"] > measured["innerWidth"]:
        found.append(
            f"{measured['scrollWidth']} px wide at {measured['innerWidth']} px; too wide: {measured['wide']}"
        )
    return found + _axe_problems(page)


# The manager's pages are the admin's less the program settings, the same templates: at 1280 px
# the admin's crawl covers them; at 375 px the manager's own menu and pages are walked too.
CRAWLS = [
    pytest.param("partner", DESKTOP, id="partner-1280px"),
    pytest.param("partner", MOBILE, id="partner-375px"),
    pytest.param("manager", MOBILE, id="manager-375px"),
    pytest.param("admin", DESKTOP, id="admin-1280px"),
    pytest.param("admin", MOBILE, id="admin-375px"),
]


@pytest.mark.parametrize(("role", "viewport"), CRAWLS)
def test_every_page_a_role_reaches_fits_and_passes_axe(
    role, viewport, new_context, live_server, tracked_sale, payout_showcase, request_showcase
):
    context = new_context(role=role, viewport=viewport)
    context.add_init_script(script=AXE_SCRIPT)
    page = context.new_page()
    visited, problems = crawl(page, live_server.url, START[role], _check)
    assert len(visited) >= 10, visited  # the crawl really went somewhere
    report = "\n".join(f"{path}: {' | '.join(found)}" for path, found in problems.items())
    assert not problems, (
        f"{len(problems)} of {len(visited)} pages as {role} at {viewport['width']} px:\n{report}"
    )


def test_the_crawler_stays_on_the_portal_and_off_downloads():
    origin = "http://127.0.0.1:5000"
    assert (
        _same_origin_path(f"{origin}/admin/partners?sort=sales#top", origin) == "/admin/partners?sort=sales"
    )
    assert _same_origin_path("https://shop.example/tents", origin) is None
    for skipped in (
        "/logout",
        "/go/demo",
        "/admin/stats/daily.csv",
        "/partner/earnings.csv",
        "/api/v1/openapi.json",
    ):
        assert _same_origin_path(origin + skipped, origin) is None, skipped


@pytest.mark.parametrize("viewport", [DESKTOP, MOBILE], ids=["1280px", "375px"])
def test_operator_pages_screenshots(viewport, new_context, live_server, tracked_sale, screenshot_dir):
    """The operator dashboard and a partner's page with figures, kept as test artifacts."""
    page = new_context(role="manager", viewport=viewport).new_page()
    width = viewport["width"]
    page.goto("/admin/")
    page.screenshot(path=screenshot_dir / f"operator-dashboard-{width}.png", full_page=True)
    partner_id = live_server.partner_id("partner@example.com")
    page.goto(f"/admin/partners/{partner_id}")
    page.screenshot(path=screenshot_dir / f"operator-partner-{width}.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


# How much of the header's width its two lines use: the bar's items side by side (the brand's
# margin left out), and the links from the first to the last one shown.
_HEADER_WIDTHS = """() => {
  const nav = document.querySelector("nav.nav");
  const style = getComputedStyle(nav);
  const inner = nav.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const gap = parseFloat(style.columnGap) || 0;
  const visible = el => el.offsetParent !== null;
  const shown = Array.from(nav.children).filter(el => visible(el) && !el.matches("details.nav-menu"));
  const width = el => el.getBoundingClientRect().width;
  const bar = shown.reduce((sum, el) => sum + width(el), 0) + gap * (shown.length - 1);
  const items = Array.from(document.querySelectorAll(".nav-links > li")).filter(visible);
  const box = el => el.getBoundingClientRect();
  const links = items.length ? box(items[items.length - 1]).right - box(items[0]).left : 0;
  const rows = new Set(items.map(li => Math.round(box(li).top))).size;
  const scrollWidth = document.documentElement.scrollWidth;
  return {inner: inner, bar: bar, links: links, link_rows: rows, scrollWidth: scrollWidth};
}"""


@pytest.mark.parametrize("role", ["partner", "manager", "admin"])
def test_the_header_fits_1280px_with_room_to_spare_and_sign_out_in_view(role, new_context):
    page = new_context(role=role, viewport=DESKTOP).new_page()
    page.goto(START[role])
    nav = page.get_by_role("navigation", name="Main")
    used = page.evaluate(_HEADER_WIDTHS)
    # The bar and the links each leave at least 100 px of the 1,120 px inside the header, on one line.
    assert used["bar"] <= used["inner"] - 100, used
    assert used["links"] <= used["inner"] - 100, used
    assert used["link_rows"] == 1, used
    assert used["scrollWidth"] <= DESKTOP["width"], used
    expect(nav.get_by_role("button", name="Sign out")).to_be_in_viewport()
    expect(nav.locator("summary.nav-menu-toggle")).to_be_hidden()
    expect(nav.locator('a[aria-current="page"]')).to_have_text("Dashboard")
    if role == "admin":
        program = nav.get_by_test_id("nav-program")
        program.locator("summary").click()
        expect(program.get_by_role("link", name="Settings")).to_be_in_viewport()
        page.keyboard.press("Escape")
        expect(program.get_by_role("link", name="Settings")).to_be_hidden()


@pytest.mark.parametrize("role", ["partner", "manager", "admin"])
def test_the_bar_is_one_line_at_375px(role, new_context):
    """Brand, language, inbox and the menu side by side: a phone's headings start high."""
    page = new_context(role=role, viewport=MOBILE).new_page()
    page.goto(START[role])
    nav = page.get_by_role("navigation", name="Main")
    brand = nav.locator(".brand").bounding_box()
    menu = nav.locator("summary.nav-menu-toggle").bounding_box()
    assert abs((menu["y"] + menu["height"] / 2) - (brand["y"] + brand["height"] / 2)) < 8, (brand, menu)
    assert menu["x"] + menu["width"] <= MOBILE["width"]
    expect(nav.get_by_role("link", name="Inbox")).to_be_visible()
