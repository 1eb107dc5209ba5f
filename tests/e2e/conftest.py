"""End-to-end harness: a live portal on 127.0.0.1 and Debian's Chromium driven by Playwright.

One server and one browser serve the whole run; every test gets fresh browser
contexts (its own cookies), so tests share the database but never a session.
Tests therefore create their own applicants with unique e-mails and never
change the demo data that other tests look at.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, got_request_exception
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from config import TestingConfig
from portal import create_app
from portal.demo import seed_demo
from portal.extensions import db, socketio
from portal.models import Commission, Conversion, Partner, PartnerStatus, PayoutItem, PayoutLine, User
from portal.models.types import utcnow
from portal.services import accounts, api_keys, links, payouts, tracking
from portal.services.payouts import PayoutDetails
from portal.services.program import get_program
from tests.conftest import CHROMIUM, migrate_database
from tests.e2e.support import (
    ACTION_TIMEOUT_MS,
    APPLICANT_PASSWORD,
    CHROMIUM_ARGS,
    DEMO_EMAILS,
    DESKTOP,
    EXPECT_TIMEOUT_MS,
    MOBILE,
    SHOP,
    PayoutDates,
    TrackingApi,
    book_line,
    click_through,
    create_partner,
    cutoff_of,
    query_of,
    sign_in,
    unique_email,
    unique_id,
)

# --- the live server --------------------------------------------------------------


class _QuietRequestHandler(WSGIRequestHandler):
    """No access log per request; errors are still logged (and collected below)."""

    def log_request(self, code="-", size="-"):
        pass


@dataclass
class LiveServer:
    url: str
    app: Flask
    server: BaseWSGIServer
    socketio_server: object
    errors: list[BaseException] = field(default_factory=list)
    # Content-Security-Policy violations the browsers saw (see watch_csp); each fails its test.
    csp_violations: list[str] = field(default_factory=list)

    def __call__(self, path: str = "/") -> str:
        return self.url + path

    def partner_id(self, email: str) -> int:
        with self.app.app_context():
            return db.session.scalar(
                sa.select(Partner.id).join(Partner.user).where(User.email == email.lower())
            )

    def partner_status(self, partner_id: int) -> tuple[str, str | None]:
        with self.app.app_context():
            partner = db.session.get(Partner, partner_id)
            return partner.status, partner.status_reason

    def conversion_id(self, transaction_id: str) -> int:
        with self.app.app_context():
            return db.session.scalar(
                sa.select(Conversion.id).where(Conversion.transaction_id == transaction_id)
            )

    def demo_campaign_id(self) -> int:
        from portal.models import Campaign

        with self.app.app_context():
            return db.session.scalars(sa.select(Campaign.id).order_by(Campaign.id)).first()

    def payout_items(self, batch_id: int) -> dict[int, tuple[str, str | None]]:
        """{partner id: (status, reference)} for every item of a payout batch."""
        with self.app.app_context():
            rows = db.session.execute(
                sa.select(PayoutItem.partner_id, PayoutItem.status, PayoutItem.reference).where(
                    PayoutItem.batch_id == batch_id
                )
            )
            return {partner_id: (status, reference) for partner_id, status, reference in rows}

    def payout_item_of(self, transaction_id: str) -> tuple[int, int, str] | None:
        """(batch id, item id, item status) of the payout holding a sale's base line, or None."""
        with self.app.app_context():
            row = db.session.execute(
                sa.select(PayoutItem.batch_id, PayoutItem.id, PayoutItem.status)
                .join(PayoutLine, PayoutLine.payout_item_id == PayoutItem.id)
                .join(Commission, Commission.id == PayoutLine.commission_id)
                .join(Conversion, Conversion.id == Commission.conversion_id)
                .where(Conversion.transaction_id == transaction_id, Commission.kind == "base")
            ).first()
            return tuple(row) if row else None

    @contextmanager
    def emitting(self) -> Iterator[None]:
        """Make Socket.IO emits (from any thread) reach this server's browsers."""
        # Every create_app() re-initialises the one global SocketIO; a test elsewhere in
        # the run may have built an app since, so the live server's must be current.
        previous = socketio.server
        socketio.server = self.socketio_server
        try:
            yield
        finally:
            socketio.server = previous


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, pinned_clock: str | None) -> Iterator[LiveServer]:
    """The portal on a free port of 127.0.0.1, with real websockets, CSRF on, demo data seeded.

    Under ``--clock=a,b,…`` one per clock (``pinned_clock``): the demo data is seeded at that clock."""
    path = tmp_path_factory.mktemp("e2e-db") / "portal-e2e.db"
    url = f"sqlite:///{path}"
    migrate_database(url)
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=url,
        STORAGE_LOCAL_DIR=str(tmp_path_factory.mktemp("e2e-media")),
        WTF_CSRF_ENABLED=True,
        SERVER_NAME=None,
        # Run as production does: errors become error pages, not test-client exceptions.
        TESTING=False,
        # Behind one proxy, as production is: a shopper's browser sends its own address in
        # X-Forwarded-For, so it is not mistaken for the partner's (self-referral rule).
        PROXY_FIX_HOPS=1,
    )
    # Flask-SocketIO keeps one server per extension instance; remember the one this app got.
    socketio_server = socketio.server
    with app.app_context():
        seed_demo()
        db.session.commit()

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietRequestHandler)
    live = LiveServer(
        url=f"http://127.0.0.1:{server.server_port}",
        app=app,
        server=server,
        socketio_server=socketio_server,
    )
    app.config["PORTAL_BASE_URL"] = live.url

    def record_error(sender, exception, **extra):
        live.errors.append(exception)

    got_request_exception.connect(record_error, app, weak=False)
    thread = threading.Thread(target=server.serve_forever, name="e2e-live-server", daemon=True)
    thread.start()
    try:
        yield live
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        socketio_server.eio.shutdown()
        got_request_exception.disconnect(record_error, app)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(autouse=True)
def _live_server_health(live_server: LiveServer) -> Iterator[None]:
    """Point Socket.IO at the live app for the test, and fail on any server-side exception
    or on any Content-Security-Policy violation a page of the test reported."""
    live_server.errors.clear()
    live_server.csp_violations.clear()
    with live_server.emitting():
        yield
    if live_server.errors:
        errors = ", ".join(repr(e) for e in live_server.errors)
        live_server.errors.clear()
        pytest.fail(f"the live server raised: {errors}")
    if live_server.csp_violations:
        violations = "\n".join(dict.fromkeys(live_server.csp_violations))
        live_server.csp_violations.clear()
        pytest.fail(f"Content-Security-Policy violations:\n{violations}")


# Runs in every page before its own scripts: the browser's violation events become console errors.
_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " blocked " + (event.blockedURI || "inline")
    + " on " + event.documentURI + " (" + (event.sourceFile || "") + ":" + event.lineNumber + ")");
});
"""


def watch_csp(context: BrowserContext, sink: list[str]) -> None:
    """Collect every CSP violation of the context's pages into ``sink``: the
    ``securitypolicyviolation`` events and Chromium's own "Refused to ..." console errors."""
    context.add_init_script(_CSP_LISTENER)

    def on_console(message) -> None:
        text = message.text
        if message.type == "error" and ("CSP violation:" in text or "Content Security Policy" in text):
            sink.append(text)

    context.on("console", on_console)


# --- data the tests make -----------------------------------------------------------


@pytest.fixture
def make_applicant(live_server: LiveServer) -> Callable[..., tuple[int, str]]:
    """Create a partner application through the service, as /apply would; returns (id, e-mail)."""

    def make(label: str = "applicant", password: str = APPLICANT_PASSWORD) -> tuple[int, str]:
        email = unique_email(label)
        with live_server.app.app_context():
            partner = accounts.apply_as_partner(
                accounts.Application(
                    name=f"E2E {label.title()}",
                    email=email,
                    password=password,
                    country="NL",
                    channels=["seo"],
                    promotion_description="Weekly canoe trip reports read by 8k paddlers.",
                    website="https://paddle-notes.example",
                )
            )
            db.session.commit()
            return partner.id, email

    return make


@pytest.fixture(scope="session")
def demo_applicant_id(live_server: LiveServer) -> int:
    """A demo partner waiting for review; the layout tests look at it and nobody changes it."""
    with live_server.app.app_context():
        return db.session.scalar(
            sa.select(Partner.id).where(Partner.status == PartnerStatus.APPLIED).order_by(Partner.id).limit(1)
        )


@pytest.fixture(scope="session")
def tracking_api(live_server: LiveServer) -> TrackingApi:
    """The brand's server: the tracking API of the live server with a key of its own."""
    with live_server.app.app_context():
        _key, plain = api_keys.create_api_key("e2e shop backend", None)
        db.session.commit()
    return TrackingApi(live_server.url, plain)


@dataclass
class TrackedSale:
    link_code: str
    click_id: str
    customer_id: str
    transaction_id: str
    conversion_id: int


@pytest.fixture(scope="session")
def tracked_sale(live_server: LiveServer, tracking_api: TrackingApi) -> TrackedSale:
    """A whole trail for the demo partner (link, click, signup, sale): pages look at it, nobody changes it."""
    with live_server.app.app_context():
        partner = db.session.scalar(
            sa.select(Partner).join(Partner.user).where(User.email == DEMO_EMAILS["partner"])
        )
        link = links.create_link(
            partner,
            get_program(),
            label="Trailhead 2P tent review — Instagram bio, spring",
            channel="social",
            destination_url=f"{SHOP}/tents/trailhead-2p-ultralight?colour=sage-green&size=two-person",
            campaign="spring-tents-2026",
            sub_id="bio-top-link",
        )
        db.session.commit()
        code = link.code
    click_id = query_of(click_through(live_server(f"/go/{code}")))["click_id"]
    customer_id = unique_id("customer-with-a-long-identifier")
    transaction_id = unique_id("order-2026-000123456")
    # Outside a test, so the autouse fixture has not pointed Socket.IO at the live server yet.
    with live_server.emitting():
        tracking_api.signup(customer_id=customer_id, click_id=click_id)
        tracking_api.conversion(
            transaction_id=transaction_id,
            amount="1249.90",
            customer_id=customer_id,
            click_id=click_id,
            product_id="tent-trailhead-2p",
        )
    return TrackedSale(code, click_id, customer_id, transaction_id, live_server.conversion_id(transaction_id))


# --- money on the books --------------------------------------------------------------


@dataclass
class Earner:
    """A partner with confirmed lines in the last payout period, paid by PayPal, not in any batch yet."""

    id: int
    email: str
    name: str
    orders: list[str]  # the confirmed lines' order ids, in the last period
    pending_order: str  # a line still in its hold period
    confirmed_minor: int
    pending_minor: int


@pytest.fixture
def earner_due_a_payout(live_server: LiveServer) -> Earner:
    """A partner whose confirmed lines (73.50 in all) belong to the batch of the last payout date."""
    name = "Fell & Fjord Trail Notes"
    with live_server.app.app_context(), live_server.emitting():
        program = get_program()
        dates = PayoutDates.of(program, utcnow())
        cutoff = cutoff_of(dates.last)
        partner, email = create_partner(
            name, "earner", PayoutDetails(method="paypal", paypal_email=unique_email("paypal"))
        )
        orders = [
            book_line(partner, 6000, cutoff - timedelta(days=6), order="order-fjord"),
            book_line(partner, 1350, cutoff - timedelta(days=2), order="order-fjord"),
        ]
        pending = book_line(partner, 990, utcnow() + timedelta(days=20), confirmed=False, order="order-fjord")
        db.session.commit()
        return Earner(partner.id, email, name, orders, pending, 7350, 990)


@dataclass
class PayoutShowcase:
    """Payout data with long names and every state a line or an item can be in; nobody changes it.

    - ``batch_id``: the batch of the payout date before the last, approved, items waiting to be
      paid (PayPal, bank transfer) and one held back (no payout details);
    - ``paid_batch_id``: the batch before that, paid and closed;
    - ``earner``: a partner whose ledger has a paid line, a clawback, a line in the approved batch,
      a confirmed line (balance under the minimum, so later batches leave it) and a pending one.
    """

    batch_id: int
    paid_batch_id: int
    earner_id: int
    earner_email: str
    payable_partner_ids: list[int]
    held_partner_id: int


@pytest.fixture(scope="session")
def payout_showcase(live_server: LiveServer) -> PayoutShowcase:
    # Outside a test, so the autouse fixture has not pointed Socket.IO at the live server yet.
    with live_server.app.app_context(), live_server.emitting():
        program = get_program()
        now = utcnow()
        dates = PayoutDates.of(program, now)
        manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["manager"])).one()
        earner, earner_email = create_partner(
            "Wilderness & Backcountry Photography Collective — Scandinavian Edition",
            "showcase-earner",
            PayoutDetails(
                method="paypal", paypal_email="payouts.wilderness-backcountry-collective@photography.example"
            ),
        )
        bank, _ = create_partner(
            "Kungsleden Long-Distance Hiking Guides AB",
            "showcase-bank",
            PayoutDetails(
                method="bank",
                account_holder="Kungsleden Long-Distance Hiking Guides Aktiebolag",
                iban="GB82 WEST 1234 5698 7654 32",
                bic="NWBKGB2LXXX",
                bank_name="Northern Lights Cooperative Savings Bank of Lapland",
            ),
        )
        held, _ = create_partner("Paddle Notes (no payout details yet)", "showcase-held")

        # The earlier batch: paid, then one of its sales is refunded (a clawback line).
        earlier = cutoff_of(dates.earlier)
        book_line(earner, 6400, earlier - timedelta(days=9), order="order-2026-000123456-paid")
        refunded = book_line(earner, 5200, earlier - timedelta(days=4), order="order-2026-000123456-refunded")
        paid_batch, _created = payouts.settle(program, dates.earlier, now=now, actor=manager)
        payouts.approve_batch(paid_batch, manager)
        payouts.mark_batch_paid(paid_batch, manager, "PAYPAL-BATCH-7F3K2Q9X-2026-EU-WEST", now.date())

        # The previous batch: approved, waiting to be paid.
        previous = cutoff_of(dates.previous)
        book_line(earner, 8800, previous - timedelta(days=5), order="order-2026-000123456-in-payout")
        book_line(bank, 12900, previous - timedelta(days=6), order="order-2026-000654321")
        book_line(held, 7300, previous - timedelta(days=3), order="order-2026-000777777")
        batch, _created = payouts.settle(program, dates.previous, now=now, actor=manager)
        payouts.approve_batch(batch, manager)

        # After both batches: the clawback and an unpaid, under-the-minimum balance.
        tracking.refund_conversion(tracking.find_conversion(refunded), None, "Customer returned the tent")
        book_line(earner, 1240, now - timedelta(hours=2), order="order-2026-000123456-confirmed")
        book_line(
            earner, 2350, now + timedelta(days=25), confirmed=False, order="order-2026-000123456-pending"
        )
        db.session.commit()
        return PayoutShowcase(
            batch_id=batch.id,
            paid_batch_id=paid_batch.id,
            earner_id=earner.id,
            earner_email=earner_email,
            payable_partner_ids=[earner.id, bank.id],
            held_partner_id=held.id,
        )


# --- custom campaign requests ---------------------------------------------------------


@dataclass
class RequestShowcase:
    """A top partner with long names and a request in each state the pages show; nobody changes it."""

    email: str
    requested_id: int
    countered_id: int
    approved_id: int


@pytest.fixture(scope="session")
def request_showcase(live_server: LiveServer) -> RequestShowcase:
    from portal.models import PrivateDeal
    from portal.services import campaign_requests
    from portal.services.partners import set_partner_tags

    # Outside a test, so the autouse fixture has not pointed Socket.IO at the live server yet.
    with live_server.app.app_context(), live_server.emitting():
        program = get_program()
        manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["manager"])).one()
        partner, email = create_partner(
            "Scandinavian Long-Distance Trail Running & Fastpacking Journal", "request-showcase"
        )
        set_partner_tags(partner, manager, [program.top_partner_tag])

        def ask(name: str, path: str, percent_bp: int):
            return campaign_requests.submit_request(
                partner,
                program,
                campaign_requests.RequestInput(
                    name=name,
                    landing_url=f"{SHOP}/{path}?utm_source=partner-journal&utm_medium=guide&utm_campaign=autumn",
                    desired_percent_bp=percent_bp,
                    expected_monthly_conversions=1250,
                    note="A 6,000-word buyer's guide, a video review series and two newsletter features.",
                ),
            )

        requested = ask(
            "Winter sleeping systems: bags, quilts and insulated pads for sub-zero fell nights",
            "collections/sleeping-systems/winter-2026-sub-zero-quilts-and-pads",
            1750,
        )
        countered = ask(
            "Autumn ultralight shelter guide — tents, tarps and bivvies for the northern fells",
            "collections/ultralight-shelters/autumn-2026-tents-tarps-bivvies",
            1625,
        )
        campaign_requests.counter_offer(
            countered, manager, program, 1250, "12.5 % for the first year; we review it after the season."
        )
        approved = ask(
            "Fastpacking starter kit: the complete 30-litre list for a first multi-day traverse",
            "collections/fastpacking/starter-kit-30-litre-multi-day",
            1500,
        )
        campaign_requests.approve_request(approved, manager, program)
        db.session.add(
            PrivateDeal(
                partner_id=partner.id,
                rate_percent_bp=1800,
                product_ids=["tent-trailhead-2p-ultralight-sage-green", "tarp-fjell-3x3-silnylon"],
                note="Agreed at the spring partner summit in Tromsø for the whole 2027 shelter range.",
            )
        )
        db.session.commit()
        return RequestShowcase(email, requested.id, countered.id, approved.id)


# --- the browser -------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright_instance():
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance, live_server: LiveServer):
    # Depends on live_server so that the browser (and its websockets) closes first.
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def role_states(browser, live_server: LiveServer) -> Callable[[str], dict]:
    """Signed-in cookies per demo role, made once through the login form and reused."""
    cache: dict[str, dict] = {}

    def state_for(role: str) -> dict:
        if role not in cache:
            context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
            watch_csp(context, live_server.csp_violations)
            try:
                sign_in(context.new_page(), DEMO_EMAILS[role])
                cache[role] = context.storage_state()
            finally:
                context.close()
        return cache[role]

    return state_for


@pytest.fixture
def new_context(browser, live_server: LiveServer, role_states):
    """Open a fresh browser context: ``new_context(role=None, viewport=DESKTOP, **playwright_options)``."""
    contexts = []

    def open_context(role: str | None = None, viewport: dict | None = None, **options):
        context = browser.new_context(
            base_url=live_server.url,
            viewport=viewport or DESKTOP,
            storage_state=role_states(role) if role else None,
            **options,
        )
        watch_csp(context, live_server.csp_violations)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context) -> Page:
    """An anonymous page at desktop size, in its own context."""
    return new_context().new_page()


@pytest.fixture
def mobile_page(new_context) -> Callable[[str | None], Page]:
    """``mobile_page(role)``: a page 375 × 740 px wide, signed in as ``role`` (or anonymous)."""

    def open_page(role: str | None = None) -> Page:
        return new_context(role=role, viewport=MOBILE).new_page()

    return open_page


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where page screenshots go: $PORTAL_E2E_SCREENSHOTS to keep them, else a pytest tmp dir."""
    chosen = os.environ.get("PORTAL_E2E_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("e2e-screenshots")
