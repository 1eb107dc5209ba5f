"""No page, fragment or export of the partner portal shows another partner's data.

``test_permissions`` checks the routes that name an object (another partner's id answers
404). This crawls every partner GET route that names none — pages, the htmx fragments
(with ``HX-Request``), the CSV exports — as partner A, after partner B has a link, a
coupon request, a message thread, sales and earnings, each marked with a word only B's
data carries; none of B's marks may appear.
"""

from datetime import timedelta

import pytest

from portal.models import Role
from portal.models.types import utcnow
from portal.services import coupons, inbox
from portal.services.links import create_link
from tests.factories import ConversionFactory, PartnerFactory, earn

MARK = "zqxbeemark"


def _partner_get_routes(app) -> list[str]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("partner.") and "GET" in rule.methods and not rule.arguments:
            routes.append(rule.rule)
    return sorted(routes)


@pytest.fixture
def other_partners_data(db, program):
    b = PartnerFactory(ref_code=f"{MARK}ref")
    program.allowed_domains = ["shop.example"]
    program.default_landing_url = "https://shop.example/"
    db.session.flush()
    create_link(b, program, label=f"{MARK} label", channel="seo", campaign=f"{MARK}camp", sub_id=f"{MARK}sub")
    coupons.request_coupon(b, f"{MARK.upper()}10", f"{MARK} note")
    inbox.start_thread(b, b.user, f"{MARK} subject", f"{MARK} body")
    earn(b, 5000, transaction_id=f"{MARK}-tx-1", at=utcnow() - timedelta(days=2))
    ConversionFactory(partner=b, transaction_id=f"{MARK}-tx-2", occurred_at=utcnow() - timedelta(days=1))
    db.session.commit()
    return b


def test_no_partner_page_fragment_or_export_shows_another_partners_data(
    app, client, login_as, other_partners_data
):
    login_as(Role.PARTNER)
    routes = _partner_get_routes(app)
    assert "/partner/earnings.csv" in routes and "/partner/dashboard/news" in routes
    today = utcnow().date()
    query = f"?from={(today - timedelta(days=30)).isoformat()}&to={today.isoformat()}"
    leaks = []
    for route in routes:
        for headers in ({}, {"HX-Request": "true"}):
            for suffix in ("", query):
                response = client.get(route + suffix, headers=headers)
                assert response.status_code < 500, route
                if MARK in response.get_data(as_text=True).lower():
                    leaks.append((route + suffix, bool(headers)))
    assert leaks == []


def test_the_crawl_sees_the_marks_when_they_are_ones_own(app, client, other_partners_data):
    """The same crawl as B finds B's marks: the test above can fail."""
    with client.session_transaction() as session:
        session["_user_id"] = other_partners_data.user.get_id()
        session["_fresh"] = True
    found = set()
    for route in _partner_get_routes(app):
        if MARK in client.get(route).get_data(as_text=True).lower():
            found.add(route)
    assert {"/partner/links", "/partner/inbox", "/partner/conversions", "/partner/earnings.csv"} <= found
