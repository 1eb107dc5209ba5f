"""The partner's own pages: links and conversions, always scoped to the signed-in partner."""

import sqlalchemy as sa

from portal.models import Link, Role
from portal.models.types import utcnow
from portal.services.links import create_link
from tests.factories import CommissionFactory, ConversionFactory, PartnerFactory


def test_create_a_link_and_see_it(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    response = client.post(
        "/partner/links",
        data={
            "label": "Tent review",
            "channel": "seo",
            "destination_url": "https://shop.example/tents",
            "campaign": "summer",
            "sub_id": "post-42",
        },
    )
    assert response.status_code == 302
    link = db.session.scalars(sa.select(Link)).one()
    assert link.partner_id == user.partner.id
    assert len(link.code) == 7
    page = client.get("/partner/links").get_data(as_text=True)
    assert "Tent review" in page
    assert f"http://portal.test/go/{link.code}" in page
    assert f"http://portal.test/go/{user.partner.ref_code}" in page


def test_link_bad_input_keeps_what_was_typed(client, db, program, login_as):
    login_as(Role.PARTNER)
    cases = [
        ({"destination_url": "https://evil.example/x"}, "only point to the program"),
        ({"destination_url": "javascript:alert(1)"}, "only point to the program"),
        ({"label": ""}, "Name the link"),
        ({"channel": "tv"}, "Not a valid choice"),
        ({"campaign": "a" * 65}, "At most 64 characters."),
        ({"sub_id": "<script>"}, "Use letters, digits"),
    ]
    for overrides, message in cases:
        data = {"label": "My label", "channel": "social", "destination_url": "", **overrides}
        response = client.post("/partner/links", data=data)
        page = response.get_data(as_text=True)
        assert response.status_code == 422, overrides
        assert message in page, overrides
        if overrides.get("label") != "":
            assert 'value="My label"' in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Link)) == 0


def test_switch_a_link_off_and_on(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    link = create_link(user.partner, program, label="x", channel="seo")
    db.session.commit()
    client.post(f"/partner/links/{link.id}/disable")
    db.session.refresh(link)
    assert not link.active
    client.post(f"/partner/links/{link.id}/enable")
    db.session.refresh(link)
    assert link.active


def test_partners_cannot_touch_or_see_each_others_data(client, db, program, login_as):
    login_as(Role.PARTNER)
    other = PartnerFactory()
    link = create_link(other, program, label="Theirs", channel="seo")
    conversion = ConversionFactory(transaction_id="their-order", amount_minor=1000, partner=other)
    db.session.commit()
    assert client.post(f"/partner/links/{link.id}/disable").status_code == 404
    assert client.get(f"/partner/conversions/{conversion.id}").status_code == 404
    assert "their-order" not in client.get("/partner/conversions").get_data(as_text=True)
    assert "Theirs" not in client.get("/partner/links").get_data(as_text=True)
    db.session.refresh(link)
    assert link.active


def test_conversion_list_and_trail_explain_the_amount_and_any_rejection(client, db, program, login_as):
    user = login_as(Role.PARTNER)
    now = utcnow()
    counted = ConversionFactory(
        transaction_id="ok-1",
        amount_minor=4990,
        partner=user.partner,
        attribution_method="ref",
        occurred_at=now,
    )
    ConversionFactory(
        transaction_id="no-1",
        amount_minor=1000,
        partner=user.partner,
        status="rejected",
        rejection_reason="self_referral",
        occurred_at=now,
    )
    CommissionFactory(
        conversion=counted,
        amount_minor=499,
        status="pending",
        at=now,
        confirm_after=now,
        explanation={
            "rule": "base",
            "type": "percent",
            "rate_bp": 1000,
            "sale_minor": 4990,
            "result_minor": 499,
        },
    )
    db.session.commit()
    page = client.get("/partner/conversions").get_data(as_text=True)
    assert "ok-1" in page
    assert "$4.99" in page
    assert "rejected" in page
    assert "self-referral" in page
    trail = client.get(f"/partner/conversions/{counted.id}").get_data(as_text=True)
    assert "10% of $49.90" in trail
    assert "credited by your partner code" in trail
