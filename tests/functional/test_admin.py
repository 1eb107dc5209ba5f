"""Operator console: reviewing partners, program settings, the team."""

import re

import pytest
import sqlalchemy as sa

from portal.models import AuditEvent, PartnerStatus, Program, Role, User
from tests.factories import PartnerFactory, UserFactory, earn

SETTINGS = {
    "name": "Northwind",
    "currency": "EUR",
    "timezone": "Europe/Paris",
    "cookie_window_days": "60",
    "hold_period_days": "0",
    "allowed_domains": "shop.example\nhttps://Brand.example/",
    "default_landing_url": "https://shop.example/landing",
    "minimum_payout": "25.50",
    "payout_schedule": "weekly",
    "payout_day_of_month": "",
    "payout_weekday": "4",
    "commission_type": "percent",
    "commission_percent": "12.5",
    "commission_flat": "",
    "ref_param": "ref",
    "click_id_param": "click_id",
    "fraud_self_referral": "y",
    "fraud_click_flood": "y",
    "click_flood_per_minute": "20",
    "fraud_duplicate_order": "y",
    "duplicate_window_minutes": "10",
    "max_sale": "250000.50",
}


def test_applications_queue_lists_oldest_first(client, db, program, login_as):
    login_as(Role.MANAGER)
    PartnerFactory(status=PartnerStatus.APPLIED, user__name="Second Applicant")
    PartnerFactory(status=PartnerStatus.APPROVED, user__name="Already In")
    first = PartnerFactory(status=PartnerStatus.APPLIED, user__name="First Applicant")
    first.applied_at = first.applied_at.replace(year=2025)
    db.session.commit()
    page = client.get("/admin/applications").get_data(as_text=True)
    assert page.index("First Applicant") < page.index("Second Applicant")
    assert "Already In" not in page


def test_partner_search_and_filter(client, db, program, login_as):
    login_as(Role.MANAGER)
    PartnerFactory(user__name="Findable Fern", ref_code="fern01")
    PartnerFactory(user__name="Hidden Hal", status=PartnerStatus.REJECTED)
    db.session.commit()
    page = client.get("/admin/partners?q=FERN").get_data(as_text=True)
    assert "Findable Fern" in page and "Hidden Hal" not in page
    page = client.get("/admin/partners?status=rejected").get_data(as_text=True)
    assert "Hidden Hal" in page and "Findable Fern" not in page
    assert client.get("/admin/partners?status=bogus&page=999").status_code == 200


def test_approve_with_htmx_returns_the_review_fragment(client, db, program, login_as):
    manager = login_as(Role.MANAGER)
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    db.session.commit()
    response = client.post(f"/admin/partners/{partner.id}/approve", headers={"HX-Request": "true"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert page.lstrip().startswith('<section class="card" id="partner-review"')
    assert "<html" not in page
    assert "✔" in page and "approved" in page
    db.session.refresh(partner)
    assert partner.status == PartnerStatus.APPROVED
    assert partner.status_changed_by_id == manager.id


def test_reject_needs_a_reason_and_shows_it_to_the_applicant(client, db, program, login_as):
    login_as(Role.MANAGER)
    partner = PartnerFactory(status=PartnerStatus.APPLIED)
    db.session.commit()
    empty = client.post(
        f"/admin/partners/{partner.id}/reject", data={"reason": ""}, headers={"HX-Request": "true"}
    )
    assert empty.status_code == 422
    assert "Say why, so the applicant knows." in empty.get_data(as_text=True)
    db.session.refresh(partner)
    assert partner.status == PartnerStatus.APPLIED

    too_long = client.post(f"/admin/partners/{partner.id}/reject", data={"reason": "x" * 1001})
    assert too_long.status_code == 422
    assert "At most 1000 characters." in too_long.get_data(as_text=True)

    done = client.post(f"/admin/partners/{partner.id}/reject", data={"reason": "No outdoor content yet."})
    assert done.status_code == 302
    db.session.refresh(partner)
    assert partner.status == PartnerStatus.REJECTED

    client.post("/logout")
    with client.session_transaction() as session:
        session["_user_id"] = partner.user.get_id()
    page = client.get("/status").get_data(as_text=True)
    assert "not accepted" in page
    assert "No outdoor content yet." in page


def test_suspend_and_reinstate(client, db, program, login_as):
    login_as(Role.ADMIN)
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    client.post(f"/admin/partners/{partner.id}/suspend", data={"reason": "Brand bidding"})
    db.session.refresh(partner)
    assert partner.status == PartnerStatus.SUSPENDED and not partner.attributes
    client.post(f"/admin/partners/{partner.id}/reinstate")
    db.session.refresh(partner)
    assert partner.status == PartnerStatus.APPROVED and partner.attributes
    page = client.get(f"/admin/partners/{partner.id}").get_data(as_text=True)
    assert "suspended" in page and "reinstated" in page and "Brand bidding" in page


def test_review_of_a_missing_partner_is_404(client, db, login_as):
    login_as(Role.MANAGER)
    assert client.get("/admin/partners/999999").status_code == 404
    assert client.post("/admin/partners/999999/approve").status_code == 404


def test_settings_save(client, db, program, login_as):
    login_as(Role.ADMIN)
    response = client.post("/admin/settings", data=SETTINGS)
    assert response.status_code == 302, response.get_data(as_text=True)
    db.session.refresh(program)
    assert program.currency == "EUR"
    assert program.allowed_domains == ["shop.example", "brand.example"]
    assert program.minimum_payout_minor == 2550
    assert (program.payout_schedule, program.payout_day) == ("weekly", 4)
    assert program.commission_percent_bp == 1250
    assert program.hold_period_days == 0
    assert program.max_sale_minor == 25_000_050
    assert db.session.scalars(sa.select(AuditEvent.action)).all() == ["program.settings_changed"]
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'value="25.50"' in page and 'value="12.5"' in page and 'value="250000.50"' in page


def test_currency_is_locked_once_a_sale_is_recorded(client, db, program, login_as):
    login_as(Role.ADMIN)
    earn(PartnerFactory(), 1000)
    db.session.commit()
    response = client.post("/admin/settings", data={**SETTINGS, "currency": "EUR"})
    assert response.status_code == 422
    assert "change once sales are recorded: every amount so far is in USD" in response.get_data(as_text=True)
    db.session.refresh(program)
    assert program.currency == "USD"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"minimum_payout": "fifty"}, "Enter a plain amount such as 50.00"),
        ({"minimum_payout": "10.123"}, "Enter a plain amount such as 50.00"),
        ({"minimum_payout": "-5"}, "cannot be negative"),
        ({"commission_percent": "150"}, "Enter a percent from 0 to 100"),
        ({"commission_type": "flat", "commission_flat": ""}, "Enter an amount, e.g. 50.00."),
        ({"cookie_window_days": "0"}, "From 1 to 365 days."),
        ({"cookie_window_days": "abc"}, "Not a valid integer value."),
        ({"hold_period_days": ""}, "Enter a number of days (0 for none)."),
        ({"allowed_domains": "not a domain"}, "is not a domain name."),
        ({"default_landing_url": "https://elsewhere.example/"}, "on an allowed domain"),
        ({"default_landing_url": "javascript:alert(1)"}, "on an allowed domain"),
        ({"payout_schedule": "monthly", "payout_day_of_month": "31"}, "From 1 to 28."),
        ({"currency": "XYZ"}, "Not a valid choice"),
        ({"name": "n" * 121}, "At most 120 characters."),
        ({"ref_param": "my ref"}, "Letters, digits and _ only"),
        ({"click_id_param": "ref"}, "need different names"),
        ({"click_flood_per_minute": "0"}, "From 1 to 10000."),
        ({"max_sale": ""}, "Enter an amount, e.g. 1000000.00."),
        ({"max_sale": "0"}, "Enter more than zero and at most €20,000,000.00."),
        ({"max_sale": "20000000.01"}, "Enter more than zero and at most €20,000,000.00."),
        ({"max_sale": "٣.٠٠"}, "Enter a plain amount such as 50.00"),
    ],
)
def test_settings_bad_input(client, db, program, login_as, overrides, message):
    login_as(Role.ADMIN)
    before = (program.name, program.currency, program.allowed_domains, program.minimum_payout_minor)
    response = client.post("/admin/settings", data={**SETTINGS, **overrides})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page
    if "name" not in overrides:
        assert 'value="Northwind"' in page  # what was typed stays
    db.session.refresh(program)
    assert (program.name, program.currency, program.allowed_domains, program.minimum_payout_minor) == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0


def test_settings_for_a_zero_decimal_currency(client, db, program, login_as):
    login_as(Role.ADMIN)
    data = {
        **SETTINGS,
        "currency": "JPY",
        "minimum_payout": "5000",
        "commission_type": "flat",
        "commission_flat": "300",
        "max_sale": "1000000",
    }
    assert client.post("/admin/settings", data=data).status_code == 302
    db.session.refresh(program)
    assert (program.minimum_payout_minor, program.commission_flat_minor) == (5000, 300)
    assert program.max_sale_minor == 1_000_000


@pytest.mark.smtp
def test_invite_a_manager(client, db, program, login_as, mail_outbox):
    admin = login_as(Role.ADMIN)
    response = client.post(
        "/admin/team", data={"name": "Nia New", "email": "Nia@Example.org", "role": "manager"}
    )
    assert response.status_code == 302
    nia = db.session.scalars(sa.select(User).where(User.email == "nia@example.org")).one()
    assert nia.role == Role.MANAGER
    assert len(mail_outbox) == 1
    assert admin.name in mail_outbox[0].get_content()
    link = re.search(r"http://portal\.test(/password/reset/\S+)", mail_outbox[0].get_content()).group(1)
    client.post("/logout")
    assert (
        client.post(link, data={"password": "nia's own phrase", "confirm": "nia's own phrase"}).status_code
        == 302
    )
    assert (
        client.post("/login", data={"email": "nia@example.org", "password": "nia's own phrase"}).status_code
        == 302
    )


def test_invite_with_a_taken_email_or_bad_role(client, db, program, login_as):
    login_as(Role.ADMIN)
    UserFactory(email="taken@example.org")
    db.session.commit()
    response = client.post("/admin/team", data={"name": "X", "email": "taken@example.org", "role": "manager"})
    assert response.status_code == 422
    assert "already exists" in response.get_data(as_text=True)
    response = client.post("/admin/team", data={"name": "X", "email": "new@example.org", "role": "partner"})
    assert response.status_code == 422
    assert (
        db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.email == "new@example.org"))
        == 0
    )


def test_invite_when_mail_is_down_adds_nobody(client, app, db, program, login_as):
    from tests.conftest import free_port

    login_as(Role.ADMIN)
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_TIMEOUT=2)
    response = client.post("/admin/team", data={"name": "Nia", "email": "nia@example.org", "role": "manager"})
    assert response.status_code == 422
    assert "could not be sent" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(User).where(User.email == "nia@example.org")) is None


def test_switch_team_access(client, db, program, login_as):
    admin = login_as(Role.ADMIN)
    manager = UserFactory(role=Role.MANAGER)
    db.session.commit()
    client.post(f"/admin/team/{manager.id}/deactivate")
    db.session.refresh(manager)
    assert not manager.active
    client.post(f"/admin/team/{admin.id}/deactivate")
    db.session.refresh(admin)
    assert admin.active
    assert "You cannot switch off your own access." in client.get("/admin/team").get_data(as_text=True)


def test_admin_dashboard_counts_and_setup_notice(client, db, login_as):
    login_as(Role.ADMIN)
    PartnerFactory(status=PartnerStatus.APPLIED)
    PartnerFactory(status=PartnerStatus.APPLIED)
    db.session.commit()
    page = client.get("/admin/").get_data(as_text=True)
    assert re.search(r'data-testid="applications-count">2<', page)
    assert "Finish setting up the program." in page  # no program configured yet
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Program)) <= 1
