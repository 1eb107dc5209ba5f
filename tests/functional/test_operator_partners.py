"""Operators see who needs them: the partners list with figures (sorted, filtered, paged, htmx),
the partner page's figures, applications approved from the list, overdue payout batches, the
counter-offer page's last 90 days, and the navigation marking the current page."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.extensions import db as _db
from portal.models import AuditEvent, BatchStatus, PartnerStatus, PartnerTier, PayoutLine, Role, Tier
from portal.services import partner_figures, payouts
from portal.services.dashboards import date_range
from tests.factories import (
    PartnerFactory,
    PayoutBatchFactory,
    PayoutItemFactory,
    earn,
    sale,
    store_clicks,
)

# Noon in Berlin (the factories' program zone), a Wednesday.
pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 18, 11, 0, tzinfo=UTC)
TODAY = date(2026, 11, 18)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _names(page: str) -> list[str]:
    """Partner names in the list's order."""
    return re.findall(
        r'data-testid="partner-row">\s*<td data-label="Partner"><a href="[^"]+">([^<]+)</a>', page
    )


@pytest.fixture
def three_partners(db, program, clock):
    """Ann sells most, Bob earns most (balance), Cid clicks most and sold nothing."""
    ann = PartnerFactory(status=PartnerStatus.APPROVED, user__name="Ann Sells")
    bob = PartnerFactory(status=PartnerStatus.APPROVED, user__name="Bob Balance")
    cid = PartnerFactory(status=PartnerStatus.APPROVED, user__name="Cid Clicks")
    sale(db, program, ann, TODAY - timedelta(days=3), amount=90_000)
    sale(db, program, bob, TODAY - timedelta(days=5), amount=20_000)
    store_clicks(db, cid, TODAY - timedelta(days=2), 7)
    store_clicks(db, ann, TODAY - timedelta(days=40), 1)  # outside the last 30 days
    earn(bob, 50_000)
    earn(ann, 1_000)
    gold = Tier(name="Gold", rank=1, rate_percent_bp=1500, threshold_value=0)
    _db.session.add(gold)
    _db.session.flush()
    _db.session.add(PartnerTier(partner_id=cid.id, tier_id=gold.id))
    _db.session.commit()
    return ann, bob, cid, gold


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=sales", ["Ann Sells", "Bob Balance", "Cid Clicks"]),
        ("sort=sales&dir=asc", ["Cid Clicks", "Bob Balance", "Ann Sells"]),
        ("sort=balance", ["Bob Balance", "Ann Sells", "Cid Clicks"]),
        # Ann's only click is older than 30 days: a tie with Bob, the newest partner first.
        ("sort=clicks", ["Cid Clicks", "Bob Balance", "Ann Sells"]),
        ("sort=name", ["Ann Sells", "Bob Balance", "Cid Clicks"]),
        ("sort=tier", ["Cid Clicks", "Bob Balance", "Ann Sells"]),
        ("sort=last_activity", ["Cid Clicks", "Ann Sells", "Bob Balance"]),
    ],
)
def test_the_partners_list_sorts_by_figures(client, login_as, three_partners, query, expected):
    login_as(Role.MANAGER)
    page = client.get(f"/admin/partners?status=approved&{query}").get_data(as_text=True)
    assert _names(page) == expected


def test_the_list_shows_each_partners_figures(client, login_as, three_partners):
    login_as(Role.MANAGER)
    page = client.get("/admin/partners?status=approved&sort=name").get_data(as_text=True)
    ann_row = page[page.index("Ann Sells") : page.index("Bob Balance")]
    assert "$900.00" in ann_row  # sales of the last 30 days
    assert "$10.00" in ann_row  # confirmed balance
    assert 'aria-sort="ascending"' in page
    cid_row = page[page.index("Cid Clicks") :]
    assert "Gold" in cid_row


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("owed=1", {"Ann Sells", "Bob Balance"}),
        ("tier=none", {"Ann Sells", "Bob Balance"}),
        ("q=cid", {"Cid Clicks"}),
        ("activity=active", {"Ann Sells", "Bob Balance", "Cid Clicks"}),
        ("activity=quiet", set()),
    ],
)
def test_the_partners_list_filters_by_figures(client, login_as, three_partners, query, expected):
    login_as(Role.ADMIN)
    page = client.get(f"/admin/partners?status=approved&{query}").get_data(as_text=True)
    assert set(_names(page)) == expected


def test_the_tier_filter_and_a_bad_sort_fall_back_quietly(client, login_as, three_partners):
    *_, gold = three_partners
    login_as(Role.MANAGER)
    page = client.get(f"/admin/partners?tier={gold.id}").get_data(as_text=True)
    assert _names(page) == ["Cid Clicks"]
    response = client.get("/admin/partners?sort=drop+table&dir=sideways&tier=x&activity=y&range=1y")
    assert response.status_code == 200


def test_at_risk_partners_are_flagged_and_filtered(client, login_as, db, program, clock):
    quiet = PartnerFactory(status=PartnerStatus.APPROVED, user__name="Quiet Quinn")
    quiet.status_changed_at = NOW - timedelta(days=60)
    busy = PartnerFactory(status=PartnerStatus.APPROVED, user__name="Busy Bea")
    store_clicks(db, busy, TODAY - timedelta(days=1), 3)
    _db.session.commit()
    login_as(Role.MANAGER)
    page = client.get("/admin/partners?risk=1").get_data(as_text=True)
    assert _names(page) == ["Quiet Quinn"]
    assert 'data-testid="risk-flag"' in page and "no click since approval" in page


def test_the_list_pages_and_keeps_its_sort_and_filters(client, login_as, db, program, clock):
    for n in range(30):
        PartnerFactory(status=PartnerStatus.APPROVED, user__name=f"Pager {n:02d}")
    _db.session.commit()
    login_as(Role.MANAGER)
    first = client.get("/admin/partners?status=approved&sort=name&dir=asc").get_data(as_text=True)
    assert _names(first)[:2] == ["Pager 00", "Pager 01"] and len(_names(first)) == 25
    assert "30 partners" in first
    next_link = re.search(r'href="([^"]*page=2[^"]*)"', first).group(1).replace("&amp;", "&")
    assert "sort=name" in next_link and "dir=asc" in next_link and "status=approved" in next_link
    second = client.get(next_link).get_data(as_text=True)
    assert _names(second) == [f"Pager {n}" for n in range(25, 30)]


def test_an_htmx_request_gets_the_list_alone(client, login_as, three_partners):
    login_as(Role.MANAGER)
    response = client.get("/admin/partners?sort=sales", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert body.lstrip().startswith("{#") is False and "<html" not in body
    assert 'id="partner-results"' in body


def test_a_page_of_figures_costs_the_same_queries_for_5_or_25_partners(app, db, program, clock):
    """No query per row: the figures of a page are a fixed number of grouped queries."""
    partners = [PartnerFactory(status=PartnerStatus.APPROVED) for _ in range(25)]
    for partner in partners:
        earn(partner, 1_000)
    _db.session.flush()
    rng = date_range("30d", TODAY)

    def statements(ids: list[int]) -> int:
        seen = []

        def count(*_args, **_kwargs):
            seen.append(1)

        engine = _db.session.get_bind()
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            partner_figures.figures_for(ids, rng)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    assert statements([p.id for p in partners[:5]]) == statements([p.id for p in partners])


# --- the partner page ---------------------------------------------------------------------


def test_the_partner_page_shows_figures_balance_last_payout_and_tier(client, login_as, three_partners):
    _ann, bob, cid, _gold = three_partners
    batch = PayoutBatchFactory(status=BatchStatus.CLOSED, period_end=TODAY - timedelta(days=20))
    item = PayoutItemFactory(
        batch=batch,
        partner=bob,
        amount_minor=12_345,
        status="paid",
        reference="R-1",
        paid_on=TODAY - timedelta(days=19),
    )
    # A paid item equals its lines: the line it paid is no longer in the balance.
    paid_line = earn(bob, 12_345)
    _db.session.flush()
    _db.session.add(PayoutLine(commission_id=paid_line.id, payout_item_id=item.id))
    _db.session.commit()
    login_as(Role.MANAGER)
    page = client.get(f"/admin/partners/{bob.id}").get_data(as_text=True)
    figures = page[page.index('data-testid="partner-figures"') :]
    assert "$200.00" in figures  # sales of the last 30 days
    assert "$500.00" in figures  # confirmed balance
    assert "$123.45" in figures and "Oct 30, 2026" in figures  # last payout
    assert "Nov 13, 2026" in figures  # last activity: the sale's day
    assert "none (base rate)" in figures
    page = client.get(f"/admin/partners/{cid.id}").get_data(as_text=True)
    assert 'data-testid="figure-tier">Gold<' in page


# --- applications ---------------------------------------------------------------------------


def test_applications_say_how_long_they_have_waited(client, login_as, db, program):
    with time_machine.travel(NOW - timedelta(days=10), tick=False):
        PartnerFactory(status=PartnerStatus.APPLIED, user__name="Patient Pat")
        _db.session.commit()
    with time_machine.travel(NOW, tick=False):
        PartnerFactory(status=PartnerStatus.APPLIED, user__name="New Nell")
        _db.session.commit()
        login_as(Role.MANAGER)
        page = client.get("/admin/applications").get_data(as_text=True)
    assert page.index("Patient Pat") < page.index("New Nell")
    assert "waiting 10 days" in page and "Nov 8, 2026" in page
    assert "today" in page


@pytest.mark.parametrize("role", [Role.MANAGER, Role.ADMIN])
def test_an_operator_approves_from_the_list(client, login_as, db, program, role):
    applicant = PartnerFactory(status=PartnerStatus.APPLIED, user__name="Listed Lou")
    _db.session.commit()
    operator = login_as(role)
    response = client.post(f"/admin/applications/{applicant.id}/approve")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/applications")
    _db.session.refresh(applicant)
    assert applicant.status == PartnerStatus.APPROVED
    event = _db.session.scalars(
        sa.select(AuditEvent).where(
            AuditEvent.subject_id == applicant.id, AuditEvent.action == "partner.approve"
        )
    ).one()
    assert event.actor_id == operator.id
    page = client.get("/admin/applications").get_data(as_text=True)
    assert "Listed Lou is approved." in page and "Listed Lou</a>" not in page


def test_approving_from_the_list_over_htmx_answers_the_list(client, login_as, db, program):
    first = PartnerFactory(status=PartnerStatus.APPLIED, user__name="First Fay")
    PartnerFactory(status=PartnerStatus.APPLIED, user__name="Second Sam")
    _db.session.commit()
    login_as(Role.MANAGER)
    response = client.post(f"/admin/applications/{first.id}/approve", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in body
    assert 'id="applications"' in body and "First Fay is approved." in body and "Second Sam" in body


@pytest.mark.parametrize("role", [Role.PARTNER, "applicant"])
def test_partners_cannot_approve_from_the_list(client, login_as, db, program, role):
    applicant = PartnerFactory(status=PartnerStatus.APPLIED)
    _db.session.commit()
    if role == "applicant":
        login_as(Role.PARTNER, status=PartnerStatus.APPLIED)
    else:
        login_as(role)
    assert client.post(f"/admin/applications/{applicant.id}/approve").status_code == 403
    _db.session.refresh(applicant)
    assert applicant.status == PartnerStatus.APPLIED


def test_approving_from_the_list_needs_the_csrf_token(app, client, login_as, db, program, monkeypatch):
    applicant = PartnerFactory(status=PartnerStatus.APPLIED, user__name="Token Tia")
    _db.session.commit()
    login_as(Role.MANAGER)
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    assert client.post(f"/admin/applications/{applicant.id}/approve").status_code == 400
    _db.session.refresh(applicant)
    assert applicant.status == PartnerStatus.APPLIED
    page = client.get("/admin/applications").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post(f"/admin/applications/{applicant.id}/approve", data={"csrf_token": token})
    assert response.status_code == 302
    _db.session.refresh(applicant)
    assert applicant.status == PartnerStatus.APPROVED


# --- payout batches past their date ------------------------------------------------------------


def test_overdue_days_count_from_the_payout_date_until_the_batch_closes(db, program):
    batch = PayoutBatchFactory(status=BatchStatus.REVIEW, period_end=date(2026, 11, 15))
    assert payouts.overdue_days(batch, date(2026, 11, 15)) == 0
    assert payouts.overdue_days(batch, date(2026, 11, 16)) == 1
    batch.status = BatchStatus.APPROVED
    assert payouts.overdue_days(batch, date(2026, 12, 1)) == 16
    batch.status = BatchStatus.CLOSED
    assert payouts.overdue_days(batch, date(2026, 12, 1)) == 0


def test_a_batch_waiting_past_its_payout_date_says_overdue(client, login_as, db, program):
    waiting = PayoutBatchFactory(status=BatchStatus.REVIEW, period_end=date(2026, 11, 15))
    PayoutItemFactory(batch=waiting)
    closed = PayoutBatchFactory(status=BatchStatus.CLOSED, period_end=date(2026, 10, 15))
    PayoutItemFactory(batch=closed, status="paid", reference="R", paid_on=date(2026, 10, 16))
    _db.session.commit()
    with time_machine.travel(datetime(2026, 12, 1, 11, 0, tzinfo=UTC), tick=False):
        login_as(Role.MANAGER)
        listing = client.get("/admin/payouts").get_data(as_text=True)
        page = client.get(f"/admin/payouts/{waiting.id}").get_data(as_text=True)
    assert listing.count('data-testid="batch-overdue"') == 1
    assert "overdue: 16 days past its payout date" in listing
    assert "overdue: 16 days past its payout date" in page
    with time_machine.travel(datetime(2026, 11, 15, 11, 0, tzinfo=UTC), tick=False):
        listing = client.get("/admin/payouts").get_data(as_text=True)
    assert "overdue" not in listing


# --- the counter-offer page, the rewards page, the navigation -------------------------------------


def test_the_counter_offer_page_shows_the_partners_last_90_days(client, login_as, db, program, clock):
    from portal.services import campaign_requests

    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    sale(db, program, partner, TODAY - timedelta(days=80), amount=30_000)
    sale(db, program, partner, TODAY - timedelta(days=100), amount=99_000)  # before the 90 days
    program.top_partner_tag = "top"
    from portal.services.partners import set_partner_tags

    manager = login_as(Role.MANAGER)
    set_partner_tags(partner, manager, ["top"])
    found = campaign_requests.submit_request(
        partner,
        program,
        campaign_requests.RequestInput(
            name="Winter guide",
            landing_url="https://shop.example/winter",
            desired_percent_bp=1500,
            expected_monthly_conversions=None,
        ),
    )
    _db.session.commit()
    page = client.get(f"/admin/campaign-requests/{found.id}").get_data(as_text=True)
    section = page[page.index('data-testid="last-90-days"') :]
    assert 'data-testid="last-90-sales">$300.00<' in section
    assert 'data-testid="last-90-conversions">1<' in section


def test_the_rewards_page_has_no_repeated_field_ids(client, login_as, db, program):
    login_as(Role.ADMIN)
    page = client.get("/admin/rewards").get_data(as_text=True)
    ids = re.findall(r'\sid="([^"]+)"', page)
    repeated = {i for i in ids if ids.count(i) > 1 and i != "csrf_token"}
    assert not repeated
    assert 'for="product-rate_percent"' in page
    assert re.search(r'<input [^>]*id="product-rate_percent"[^>]*name="rate_percent"', page)


@pytest.mark.parametrize(
    ("role", "path", "current"),
    [
        (Role.MANAGER, "/admin/partners", "Partners"),
        (Role.MANAGER, "/admin/applications", "Applications"),
        (Role.MANAGER, "/admin/conversions?status=review", "Conversions to review"),
        (Role.ADMIN, "/admin/team", "Team"),
        (Role.ADMIN, "/admin/rewards/tiers", "Rewards"),
    ],
)
def test_the_navigation_marks_the_current_page(client, login_as, db, program, role, path, current):
    login_as(role)
    page = client.get(path).get_data(as_text=True)
    nav = page[page.index('aria-label="Main"') : page.index("</header>")]
    assert re.findall(r'aria-current="page">([^<]+)<', nav) == [current]
    assert "Sign out" in nav


def test_only_admins_get_the_program_menu(client, login_as, db, program):
    login_as(Role.MANAGER)
    page = client.get("/admin/").get_data(as_text=True)
    assert 'data-testid="nav-more"' in page and 'data-testid="nav-program"' not in page
    assert "/admin/settings" not in page
