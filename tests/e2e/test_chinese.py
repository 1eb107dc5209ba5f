"""The partner's pages in Simplified Chinese, 1280 and 375 px wide: no English left but user data.

Every visible text node, and the texts a page gives assistive technology (placeholders,
labels, titles, alt texts), is read from the real page. A node that is user data (any
text column of the database: the demo's names, creatives, messages, ids) is left out,
and so is data inside a node; what remains may hold no Latin word except those in
``ALLOWED`` (product names, codes, currency codes). Screenshots of every page at both
widths go to the screenshot folder under ``zh/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import available_timezones

import pytest
import sqlalchemy as sa
from babel import Locale
from babel.numbers import list_currencies
from playwright.sync_api import Page, expect

from portal.extensions import db
from portal.markup import markdown_to_text
from portal.models import Creative, Partner, Thread, User
from portal.services import inbox
from tests.e2e.support import APPLICANT_PASSWORD, DEMO_EMAILS, DESKTOP, MOBILE, create_partner

pytestmark = pytest.mark.e2e

# Words that stay as they are in Chinese text: product and company names, formats and
# standards, currency codes and symbols' letters, and each language's own name on the switch.
ALLOWED = {
    "English",
    "Webhook",  # the glossary keeps the word (Webhook / 端点), as Chinese developer docs do
    "PayPal",
    "Payouts",
    "YouTube",
    "youtube",  # the example of a partner tag, which is lower-case ASCII (announcements.normalise_tag)
    "Vimeo",
    "Instagram",
    "Windows",
    "Linux",
    "macOS",
    "IBAN",
    "BIC",
    "SWIFT",
    "CSV",
    "HTML",
    "API",
    "OpenAPI",
    "ID",
    "URL",
    "SEO",
    "Cookie",
    "PNG",
    "JPEG",
    "GIF",
    "WebP",
    "SVG",
    "PDF",
    "ZIP",
    "JSON",
    "UTC",
    "GMT",
    "US",
    "USD",
    "EUR",
    "CNY",
    "CA",
    "AU",
    "HK",
    "NT",
    "KB",
    "MB",
    "GB",
}
# Every ISO 4217 code (the currency choices show codes, as the issue allows).
ALLOWED |= set(list_currencies())

# Columns that hold codes the portal itself turns into words (a status, a kind): what they show
# must be translated, so they are not user data.
CODE_COLUMNS = {
    "status",
    "kind",
    "role",
    "channel",
    "payout_schedule",
    "commission_type",
    "recurring_mode",
    "rate_type",
    "threshold_metric",
    "period",
    "method",
    "rejection_reason",
    "reason_code",
    "hold_reason",
    "audience",
    "audience_kind",
    "automatic_kind",
    "sender",
    "action",
    "event",
    "currency",
    "locale",
    "default_locale",
    "timezone",
    "language",
    "dimension",
    "attribution",
    "state",
    "target_type",
    "password_hash",
}

# Every text node that is shown, and the accessible texts of elements, one string each.
_TEXTS = """() => {
  const out = [];
  const shown = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (style.display === "none" || style.visibility === "hidden") return false;
      if (["SCRIPT", "STYLE", "TEMPLATE"].includes(e.tagName)) return false;
      // Code to copy (an embed snippet, an id) is not language.
      if (["TEXTAREA", "CODE", "PRE", "KBD", "SAMP"].includes(e.tagName)) return false;
    }
    return true;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const parent = node.parentElement;
    if (!text || !parent) continue;
    // An <option> is read when its <select> is, whatever the option's own box says.
    const el = parent.tagName === "OPTION" ? parent.closest("select") : parent;
    if (el && shown(el)) out.push(text);
  }
  const named = "[placeholder], [aria-label], [title], img[alt], [data-label]";
  for (const el of document.querySelectorAll(named)) {
    for (const name of ["placeholder", "aria-label", "title", "alt", "data-label"]) {
      const value = el.getAttribute(name);
      if (value && value.trim()) out.push(value.trim());
    }
  }
  out.push(document.title);
  return out;
}"""

_WIDE = """() => document.documentElement.scrollWidth"""
# Figures (money, counts, rates) that the page lays out on more than one line: a number broken
# in two ("US$1,249.9" / "0") is a layout the longer Chinese formats broke.
_BROKEN_FIGURES = """() => [...document.querySelectorAll(".stat-value")].filter((el) => {
  if (!el.textContent.trim() || !el.getClientRects().length) return false;
  const range = document.createRange();
  range.selectNodeContents(el);
  return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1;
}).map((el) => el.textContent.trim())"""
# Chinese characters and full-width punctuation: what separates runs of other text.
_CJK = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uff00-\uffef]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
# Addresses, e-mails, file names, ids with digits, dotted or snake_case codes: data, not words.
# Lower-case words joined by dashes (summer-sale) are codes: link codes, tags, slugs.
_NOT_WORDS = re.compile(
    r"(https?://\S+|\S+@\S+|\S*[0-9_/\\.:=?&#{}$]\S*|`[^`]*`|\bppk_\S+|\b[a-z0-9]+(?:-[a-z0-9]+)+\b)"
)


def _normal(text: str) -> str:
    return " ".join(text.replace("\\", "").split())


def _user_data(live_server) -> str:
    """Every text value in the database that people typed or the demo made up, one per line."""
    values: set[str] = set()

    def add(value) -> None:
        if isinstance(value, str) and value.strip():
            values.add(_normal(value))
            # Markdown as it reads once rendered: no emphasis marks, link texts only.
            plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", value)
            values.add(_normal(re.sub(r"[*_`#>]+", "", plain)))
            # … and as list previews show it (portal.markup: a link's address after its text).
            values.add(_normal(markdown_to_text(value)))
        elif isinstance(value, list | tuple):
            for item in value:
                add(item)
        elif isinstance(value, dict):
            for item in value.values():
                add(item)

    with live_server.app.app_context():
        for table in db.metadata.sorted_tables:
            for column in table.columns:
                if column.name in CODE_COLUMNS or not isinstance(column.type, sa.String | sa.Text | sa.JSON):
                    continue
                query = sa.select(column).where(column.is_not(None))
                if not isinstance(column.type, sa.JSON):  # PostgreSQL cannot compare json values
                    query = query.distinct()
                for (value,) in db.session.execute(query):
                    add(value)
    # CLDR's own names of languages and territories in Chinese (a few carry a letter: 国际文字（E）).
    cldr = Locale.parse("zh_Hans_CN")
    values.update(cldr.languages.values())
    values.update(cldr.territories.values())
    # Place names of the time zone database (CLDR has no Chinese name for every city).
    for zone in available_timezones():
        parts = zone.replace("_", " ").split("/")
        values.update([*parts, "/".join(parts[1:])])
    # Spaced as the page shows them: a multi-line message reads as one line in a preview.
    return "\n".join(sorted({_normal(value) for value in values}))


def _english_left(texts: list[str], data: str) -> dict[str, str]:
    """{English word: the text it is in} for every word outside user data and ``ALLOWED``."""
    left: dict[str, str] = {}
    for raw in texts:
        cut = _normal(raw).endswith("…")  # a preview: user data cut in the middle of a word
        text = _normal(raw).rstrip("…").strip()
        if not _WORD.search(text):
            continue
        end = "" if cut else r"(?![A-Za-z])"
        if re.search(r"(?<![A-Za-z])" + re.escape(text) + end, data):
            continue  # the whole node is data (a name, a message, the start of a long text)
        # Data inside a translated sentence: in each run of non-Chinese text, take out the
        # longest runs of words that are data.
        for run in _CJK.split(text):
            remaining = run
            for piece in _data_pieces(run, data):
                remaining = remaining.replace(piece, " ")
            remaining = _NOT_WORDS.sub(" ", remaining)
            left.update((w, text) for w in _WORD.findall(remaining) if w not in ALLOWED)
    return left


def test_the_check_finds_english_and_leaves_data_alone():
    data = "Demo Partner\nTrailhead 2P tent review"
    texts = ["欢迎，Demo Partner", "Trailhead 2P tent", "Your links", "打开 PayPal", "https://x.example/a"]
    assert _english_left(texts, data) == {"Your": "Your links", "links": "Your links"}
    # A preview cut inside a word is still data; a cut text that is not data is still English.
    assert _english_left(["Trailhead 2P te…", "Your li…"], data) == {"Your": "Your li", "li": "Your li"}


def _data_pieces(text: str, data: str) -> list[str]:
    """The longest runs of words in ``text`` that are also a run in the data, longest first."""
    words = text.split()
    found = []
    i = 0
    while i < len(words):
        best = 0
        for j in range(len(words), i, -1):
            piece = " ".join(words[i:j]).strip(" ,.:;()[]\"'·—–-")
            if (
                piece
                and _WORD.search(piece)
                and (re.search(r"(?<![A-Za-z])" + re.escape(piece) + r"(?![A-Za-z])", data))
            ):
                found.append(piece)
                best = j - i
                break
        i += max(best, 1)
    return sorted(found, key=len, reverse=True)


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"


def _check(page: Page, path: str, width: int, data: str, shots: Path, who: str = "partner") -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200, (path, response and response.status)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.screenshot(path=shots / f"{who}-{_slug(path)}-{width}.png", full_page=True)
    left = _english_left(page.evaluate(_TEXTS), data)
    assert not left, f"{path} at {width} px shows English outside user data: {left}"
    if width == MOBILE["width"]:
        assert page.evaluate(_WIDE) <= width, f"{path} is wider than {width} px in Chinese"
    broken = page.evaluate(_BROKEN_FIGURES)
    assert not broken, f"{path} at {width} px breaks figures over two lines: {broken}"


@pytest.fixture(scope="module")
def zh_shots(screenshot_dir: Path) -> Path:
    folder = screenshot_dir / "zh"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _demo_ids(live_server) -> dict[str, int]:
    with live_server.app.app_context():
        partner = db.session.scalar(
            sa.select(Partner).join(Partner.user).where(User.email == DEMO_EMAILS["partner"])
        )
        creative = db.session.scalar(
            sa.select(Creative.id).where(Creative.status == "published").order_by(Creative.id).limit(1)
        )
        thread = db.session.scalar(
            sa.select(Thread.id).where(Thread.partner_id == partner.id).order_by(Thread.id).limit(1)
        )
        if thread is None:
            with live_server.emitting():
                manager = db.session.scalar(sa.select(User).where(User.email == DEMO_EMAILS["manager"]))
                thread = inbox.start_thread(partner, manager, "Spring tents", "How are the tents doing?").id
                db.session.commit()
        return {"creative": creative, "thread": thread}


PARTNER_PAGES = [
    "/partner/",
    "/partner/?range=90d",
    "/partner/links",
    "/partner/creatives",
    "/partner/creatives/<creative>",
    "/partner/creatives/stats",
    "/partner/conversions",
    "/partner/conversions/<tracked sale>",
    "/partner/earnings",
    "/partner/payout-details",
    "/partner/rewards",
    "/partner/inbox",
    "/partner/inbox/<thread>",
    "/partner/preferences",
    "/partner/terms",
    "/account",
]
PUBLIC_PAGES = ["/", "/login", "/apply", "/password/forgot"]


@pytest.mark.parametrize("viewport", [DESKTOP, MOBILE], ids=["1280", "375"])
def test_the_partner_pages_are_all_chinese(
    viewport, new_context, live_server, tracked_sale, payout_showcase, request_showcase, zh_shots
):
    ids = _demo_ids(live_server)
    # The browser asks for Chinese; nobody's own setting changes (other tests read English).
    page = new_context(role="partner", viewport=viewport, locale="zh-CN").new_page()
    earner = new_context(viewport=viewport, locale="zh-CN").new_page()
    sign_in_zh(earner, payout_showcase.earner_email)
    top = new_context(viewport=viewport, locale="zh-CN").new_page()
    sign_in_zh(top, request_showcase.email)
    data = _user_data(live_server)
    for path in PARTNER_PAGES:
        real = (
            path.replace("<creative>", str(ids["creative"]))
            .replace("<thread>", str(ids["thread"]))
            .replace("<tracked sale>", str(tracked_sale.conversion_id))
        )
        _check(page, real, viewport["width"], data, zh_shots)
    # The earnings of a partner with a line in every state, the rewards of a top partner.
    for who, reader, path in [
        ("earner", earner, "/partner/earnings"),
        ("top", top, "/partner/rewards"),
        ("top", top, f"/partner/rewards/requests/{request_showcase.countered_id}"),
        ("top", top, f"/partner/rewards/requests/{request_showcase.approved_id}"),
    ]:
        _check(reader, path, viewport["width"], data, zh_shots, who)


def sign_in_zh(page: Page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("电子邮箱", exact=True).fill(email)
    page.get_by_label("密码").fill(APPLICANT_PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"))


@pytest.mark.parametrize("viewport", [DESKTOP, MOBILE], ids=["1280", "375"])
def test_a_new_visitor_asking_for_chinese_gets_the_public_pages_in_chinese(
    viewport, new_context, live_server, zh_shots
):
    page = new_context(viewport=viewport, locale="zh-CN").new_page()
    data = _user_data(live_server)
    for path in PUBLIC_PAGES:
        _check(page, path, viewport["width"], data, zh_shots, "visitor")
    expect(page.get_by_role("button", name="English")).to_be_visible()


def test_the_switch_changes_the_language_and_keeps_it_on_the_account(new_context, live_server, zh_shots):
    with live_server.app.app_context():
        partner, email = create_partner("Switch Tester", "switch")
        db.session.commit()
        user_id = partner.user_id
    page = new_context(viewport=MOBILE, locale="en-US").new_page()
    page.goto("/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    # Anonymous: a cookie; the switch is visible at 375 px without opening the menu.
    page.get_by_role("button", name="简体中文").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("登录")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    sign_in_zh(page, email)
    expect(page.get_by_role("heading", level=1)).to_contain_text("欢迎")
    page.screenshot(path=zh_shots / "switch-dashboard-375.png", full_page=True)
    # Signed in: back to English and forth again is kept on the account.
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")
    page.get_by_role("button", name="简体中文").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("欢迎")
    with live_server.app.app_context():
        assert db.session.get(User, user_id).locale == "zh_Hans_CN"


CONSOLE_PAGES = [
    "/admin/",
    "/admin/applications",
    "/admin/partners",
    "/admin/partners/<partner>",
    "/admin/conversions",
    "/admin/conversions/<tracked sale>",
    "/admin/payouts",
    "/admin/inbox",
    "/admin/inbox/<thread>",
    "/admin/announcements",
    "/admin/announcements/new",
    "/admin/automatic-messages",
    "/admin/automatic-messages/welcome",
    "/admin/creatives",
    "/admin/creatives/stats",
    "/admin/creatives/new/banner",
    "/admin/campaign-requests",
    "/admin/coupons",
    "/admin/rewards",
    "/admin/rewards/tiers",
    "/admin/rewards/tiers/new",
    "/admin/rewards/campaigns",
    "/admin/rewards/campaigns/new",
    "/admin/rewards/deals",
    "/admin/rewards/ladder",
    "/admin/integration",
    "/admin/outbox",
    "/admin/api-keys",
    "/admin/settings",
    "/admin/team",
    "/account",
]


@pytest.mark.parametrize("viewport", [DESKTOP, MOBILE], ids=["1280", "375"])
def test_the_operator_console_is_all_chinese(viewport, new_context, live_server, tracked_sale, zh_shots):
    """Operators read the console in their language too (the same check as the partner's pages)."""
    ids = _demo_ids(live_server)
    with live_server.app.app_context():
        partner_id = db.session.scalar(
            sa.select(Partner.id).join(Partner.user).where(User.email == DEMO_EMAILS["partner"])
        )
    page = new_context(role="admin", viewport=viewport, locale="zh-CN").new_page()
    data = _user_data(live_server)
    for path in CONSOLE_PAGES:
        real = (
            path.replace("<partner>", str(partner_id))
            .replace("<thread>", str(ids["thread"]))
            .replace("<tracked sale>", str(tracked_sale.conversion_id))
        )
        _check(page, real, viewport["width"], data, zh_shots, "operator")
