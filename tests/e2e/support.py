"""What the end-to-end tests share: browser settings, sizes, sign-in."""

from __future__ import annotations

import base64
import itertools
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import Message
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from playwright.sync_api import Page, expect

from portal.demo import DEMO_PASSWORD
from portal.extensions import db
from portal.models import Partner, Program, User
from portal.services import accounts, payouts, schedule
from portal.services.payouts import PayoutDetails
from portal.services.program import get_program
from tests.factories import CommissionFactory

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


def unique_id(label: str) -> str:
    """A transaction or customer id nobody else in the run uses."""
    return f"e2e-{label}-{next(_sequence)}"


def sign_in(page: Page, email: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the real form (its CSRF token included) and wait to land."""

    page.goto("/login")
    page.get_by_label("E-mail", exact=True).fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"))


# --- the shop the partner links lead to -----------------------------------------------

SHOP = "https://shop.northwind-outdoor.example"
# A shopper somewhere else than the partner (TEST-NET-3, RFC 5737), as a proxy would report it;
# the live server trusts one X-Forwarded-For hop. Same address as the partner = self-referral.
SHOPPER_IP = "203.0.113.7"
# An ordinary desktop browser: the headless one's own user agent counts as a bot.
SHOPPER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36"
)
SHOPPER_HEADERS = {"X-Forwarded-For": SHOPPER_IP, "User-Agent": SHOPPER_USER_AGENT}


def stub_shop(page: Page) -> list[str]:
    """Answer the shop's pages in ``page`` with a tiny stub; returns the pages the browser opened there.

    The browser must never reach the real shop (and cannot: only 127.0.0.1 resolves). Playwright's
    ``page.route`` is not called for the target of a redirect, which is exactly how shoppers arrive
    from ``/go/<code>``, so this pauses the shop's requests with Chromium's own Fetch domain.
    """
    opened: list[str] = []
    cdp = page.context.new_cdp_session(page)

    def fulfil(event: dict) -> None:
        if event["resourceType"] == "Document":
            opened.append(event["request"]["url"])
        cdp.send(
            "Fetch.fulfillRequest",
            {
                "requestId": event["requestId"],
                "responseCode": 200,
                "responseHeaders": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
                "body": base64.b64encode(_SHOP_PAGE).decode(),
            },
        )

    cdp.on("Fetch.requestPaused", fulfil)
    cdp.send("Fetch.enable", {"patterns": [{"urlPattern": f"{SHOP}/*", "requestStage": "Request"}]})
    return opened


_SHOP_PAGE = b"<!doctype html><title>Northwind Outdoor</title><h1>Northwind Outdoor (stub)</h1>"


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


# Signed click ids ("k" + 31 URL-safe characters); ids issued before signing were 32 hex digits.
CLICK_ID = re.compile(r"k[A-Za-z0-9_-]{31}|[0-9a-f]{32}")


# --- the brand's server, calling the tracking API ---------------------------------------


@dataclass
class ApiAnswer:
    status: int
    body: dict
    headers: Message


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx comes back as an HTTPError, Location and all


# Straight to 127.0.0.1: never through an http_proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def _send(request: urllib.request.Request) -> tuple[int, bytes, Message]:
    try:
        with _direct.open(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), error.headers


class TrackingApi:
    """The tracking API v1 of the live server, over real HTTP, with one API key."""

    def __init__(self, base_url: str, key: str):
        self.base_url = base_url.rstrip("/") + "/api/v1"
        self.key = key

    def call(self, method: str, path: str, body: dict | None = None) -> ApiAnswer:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        status, raw, response_headers = _send(request)
        return ApiAnswer(status, json.loads(raw) if raw else {}, response_headers)

    def post(self, path: str, body: dict | None = None) -> ApiAnswer:
        return self.call("POST", path, body)

    def get(self, path: str) -> ApiAnswer:
        return self.call("GET", path)

    def signup(self, **body) -> dict:
        answer = self.post("/signups", body)
        assert answer.status == 201, answer.body
        return answer.body["signup"]

    def conversion(self, **body) -> dict:
        """Report a sale in the program's currency (USD) unless told otherwise."""
        answer = self.post("/conversions", {"currency": "USD", **body})
        assert answer.status == 201, answer.body
        return answer.body["conversion"]

    def refund(self, transaction_id: str, **body) -> dict:
        answer = self.post(f"/conversions/{transaction_id}/refund", body)
        assert answer.status == 200, answer.body
        return answer.body["conversion"]


def click_through(url: str) -> str:
    """Follow a partner link as a shopper's browser would, without following the redirect."""
    status, _body, headers = _send(urllib.request.Request(url, headers=SHOPPER_HEADERS))
    assert status == 302, f"{url} answered {status}"
    return headers["Location"]


# --- money on the books (call these inside the live server's app context; the caller commits) ---

_line_numbers = itertools.count(1)


@dataclass(frozen=True)
class PayoutDates:
    """The program's payout dates as of now (in its zone) and the cut-off instant of each."""

    last: date  # the date "Build the batch for the last payout date now" builds
    previous: date  # the one before: its batch is approved and waiting to be paid
    earlier: date  # the one before that: its batch is paid and closed

    @staticmethod
    def of(program: Program, now: datetime) -> PayoutDates:
        last = schedule.last_payout_date(
            program.payout_schedule, program.payout_day, schedule.local_today(program, now)
        )
        previous = schedule.previous_payout_date(program.payout_schedule, program.payout_day, last)
        earlier = schedule.previous_payout_date(program.payout_schedule, program.payout_day, previous)
        return PayoutDates(last, previous, earlier)


def cutoff_of(payout_date: date) -> datetime:
    """Lines confirmed before this instant belong to the batch of ``payout_date``."""
    return schedule.start_of_day_utc(get_program(), payout_date)


def create_partner(name: str, label: str, payout: PayoutDetails | None = None) -> tuple[Partner, str]:
    """An approved partner who signs in with APPLICANT_PASSWORD, optionally with payout details.

    Call inside the live server's app context; the caller commits.
    """
    email = unique_email(label)
    partner = accounts.apply_as_partner(
        accounts.Application(
            name=name,
            email=email,
            password=APPLICANT_PASSWORD,
            country="SE",
            channels=["seo", "social"],
            promotion_description="Trip reports and gear tests from the northern fells.",
            website="https://fell-notes.example",
        )
    )
    manager = db.session.scalars(sa.select(User).where(User.email == DEMO_EMAILS["manager"])).one()
    accounts.approve_partner(partner, manager)
    if payout is not None:
        payouts.save_payout_account(partner, payout, partner.user)
    return partner, email


def book_line(
    partner: Partner, amount_minor: int, at: datetime, *, confirmed: bool = True, order: str = "order"
) -> str:
    """A sale and its base commission line, confirmed at ``at`` (or pending until ``at``).

    ``tests.factories.CommissionFactory`` with an order id nobody else uses; returns it.
    Call inside the live server's app context; the caller commits.
    """
    transaction_id = unique_id(f"{order}-{next(_line_numbers):04d}")
    currency = get_program().currency
    CommissionFactory(
        partner=partner,
        amount_minor=amount_minor,
        currency=currency,
        status="confirmed" if confirmed else "pending",
        at=at,
        confirm_after=at,
        explanation={"rule": "e2e", "amount_minor": amount_minor},
        conversion__partner=partner,
        conversion__transaction_id=transaction_id,
        conversion__request_fingerprint="e2e",
        conversion__occurred_at=at - timedelta(days=30),
    )
    return transaction_id
