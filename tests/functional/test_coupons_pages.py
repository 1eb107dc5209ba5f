"""Coupon codes in the console and on the partner's links page."""

import sqlalchemy as sa

from portal.models import AuditEvent, Coupon, CouponStatus, PartnerStatus, Role
from portal.services import coupons
from tests.factories import PartnerFactory


def _codes(db) -> dict[str, str]:
    db.session.expire_all()
    return {c.code: c.status for c in db.session.scalars(sa.select(Coupon))}


def test_an_operator_gives_a_partner_a_code(client, db, program, login_as):
    partner = PartnerFactory(ref_code="pat")
    login_as(Role.MANAGER)
    response = client.post("/admin/coupons", data={"code": "pat-summer", "partner": "PAT"})
    assert response.status_code == 302
    assert _codes(db) == {"PAT-SUMMER": CouponStatus.ACTIVE}
    page = client.get("/admin/coupons").get_data(as_text=True)
    assert "PAT-SUMMER" in page and "Code PAT-SUMMER now attributes sales to pat." in page
    assert db.session.scalar(sa.select(AuditEvent.action).where(AuditEvent.subject_type == "coupon")) == (
        "coupon.added"
    )
    assert partner.id == db.session.scalars(sa.select(Coupon.partner_id)).one()


def test_the_console_says_what_is_wrong(client, db, program, login_as):
    partner = PartnerFactory(ref_code="pat")
    db.session.flush()
    coupons.add_coupon(partner, "TAKEN", None)
    login_as(Role.ADMIN)
    cases = [
        ({"code": "taken", "partner": "pat"}, "The code TAKEN is already taken."),
        ({"code": "ab", "partner": "pat"}, "A coupon code is 3-40 letters"),
        ({"code": "new-one", "partner": "nobody"}, "No partner has this ref code."),
        ({"code": "", "partner": "pat"}, "Enter the code."),
    ]
    for data, message in cases:
        response = client.post("/admin/coupons", data=data)
        assert response.status_code == 422, data
        assert message in response.get_data(as_text=True), data
    assert _codes(db) == {"TAKEN": CouponStatus.ACTIVE}


def test_a_partner_asks_and_a_manager_approves(client, db, program, login_as, make_user):
    user = login_as(Role.PARTNER)
    response = client.post("/partner/coupons", data={"code": "anna10", "note": "my podcast"})
    assert response.status_code == 302
    assert _codes(db) == {"ANNA10": CouponStatus.REQUESTED}
    page = client.get("/partner/links").get_data(as_text=True)
    assert "ANNA10" in page and "waiting for approval" in page

    manager = make_user(Role.MANAGER)
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"] = manager.get_id()
    queue = client.get("/admin/coupons?status=requested").get_data(as_text=True)
    assert "ANNA10" in queue and "my podcast" in queue and "1 request waiting" in queue
    coupon_id = db.session.scalars(sa.select(Coupon.id)).one()
    assert client.post(f"/admin/coupons/{coupon_id}/approve").status_code == 302
    assert _codes(db) == {"ANNA10": CouponStatus.ACTIVE}
    assert client.post(f"/admin/coupons/{coupon_id}/disable").status_code == 302
    assert _codes(db) == {"ANNA10": CouponStatus.DISABLED}
    assert client.post(f"/admin/coupons/{coupon_id}/approve").status_code == 302  # refused, flashed
    assert _codes(db) == {"ANNA10": CouponStatus.DISABLED}
    assert client.post(f"/admin/coupons/{coupon_id}/enable").status_code == 302
    assert _codes(db) == {"ANNA10": CouponStatus.ACTIVE}
    assert user.partner.id == db.session.scalars(sa.select(Coupon.partner_id)).one()


def test_a_declined_request_frees_the_code(client, db, program, login_as, make_user):
    partner = PartnerFactory(ref_code="pat")
    db.session.flush()
    coupon = coupons.request_coupon(partner, "WANTED", None)
    login_as(Role.MANAGER)
    assert client.post(f"/admin/coupons/{coupon.id}/decline").status_code == 302
    assert _codes(db) == {}
    other = PartnerFactory(ref_code="sam")
    db.session.flush()
    assert coupons.add_coupon(other, "wanted", None).code == "WANTED"


def test_a_partner_sees_only_their_own_codes_and_may_not_hoard_requests(client, db, program, login_as):
    other = PartnerFactory(ref_code="other")
    db.session.flush()
    coupons.add_coupon(other, "OTHERS-CODE", None)
    login_as(Role.PARTNER)
    for code in ("ONE", "TWO", "THREE"):
        assert client.post("/partner/coupons", data={"code": code}).status_code == 302
    refused = client.post("/partner/coupons", data={"code": "FOUR"})
    assert refused.status_code == 422
    assert "You have 3 requests waiting" in refused.get_data(as_text=True)
    page = client.get("/partner/links").get_data(as_text=True)
    assert "OTHERS-CODE" not in page
    assert all(code in page for code in ("ONE", "TWO", "THREE"))


def test_a_suspended_partner_cannot_ask(client, db, program, login_as):
    login_as(Role.PARTNER, status=PartnerStatus.SUSPENDED)
    page = client.get("/partner/links").get_data(as_text=True)
    assert "Ask for the code" not in page
    refused = client.post("/partner/coupons", data={"code": "SNEAKY"})
    assert refused.status_code == 422
    assert _codes(db) == {}


def test_the_program_chooses_first_touch_in_settings(client, db, program, login_as):
    from tests.functional.test_admin import SETTINGS

    login_as(Role.ADMIN)
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'checked id="coupon_attribution-0"' in page and "partner (first touch)" in page
    response = client.post("/admin/settings", data={**SETTINGS, "coupon_attribution": "first_touch"})
    assert response.status_code == 302
    db.session.refresh(program)
    assert program.coupon_attribution == "first_touch"
    # Left out (an older form), the choice stays as it is.
    assert client.post("/admin/settings", data=SETTINGS).status_code == 302
    db.session.refresh(program)
    assert program.coupon_attribution == "first_touch"
    refused = client.post("/admin/settings", data={**SETTINGS, "coupon_attribution": "last_click"})
    assert refused.status_code == 422
    assert "Not a valid choice" in refused.get_data(as_text=True)


def test_copy_text_carries_the_partners_code(client, db, program, login_as):
    from tests.creative_support import make_text
    from tests.factories import UserFactory

    text = make_text(UserFactory(role=Role.MANAGER), program, body="Use {coupon} or {link}")
    user = login_as(Role.PARTNER)
    page = client.get(f"/partner/creatives/{text.id}").get_data(as_text=True)
    assert 'data-testid="needs-coupon"' in page and "Use {coupon} or http://portal.test/go/" in page
    coupons.add_coupon(user.partner, "first-code", None)
    coupons.add_coupon(user.partner, "second-code", None)
    db.session.commit()
    page = client.get(f"/partner/creatives/{text.id}").get_data(as_text=True)
    assert 'data-testid="needs-coupon"' not in page and "Use FIRST-CODE or http://portal.test/go/" in page


def test_the_console_shows_the_code_on_a_sale(client, db, program, login_as):
    from portal.services import tracking

    partner = PartnerFactory(ref_code="pat")
    db.session.flush()
    coupons.add_coupon(partner, "PAT10", None)
    data = tracking.ConversionInput(transaction_id="t-1", amount_minor=1000, currency="USD", coupon="pat10")
    conversion, _created = tracking.record_conversion(program, data, {"t": 1})
    login_as(Role.MANAGER)
    page = client.get(f"/admin/conversions/{conversion.id}").get_data(as_text=True)
    assert "the partner's coupon code" in page
    assert 'data-testid="coupon-code">PAT10<' in page


def test_a_partners_note_is_shown_as_text(client, db, program, login_as, make_user):
    login_as(Role.PARTNER)
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    assert client.post("/partner/coupons", data={"code": "SAFE1", "note": payload}).status_code == 302
    manager = make_user(Role.MANAGER)
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"] = manager.get_id()
    page = client.get("/admin/coupons").get_data(as_text=True)
    assert payload not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_the_partner_sees_which_code_brought_a_sale(client, db, program, login_as):
    from portal.services import tracking

    user = login_as(Role.PARTNER)
    coupons.add_coupon(user.partner, "MINE10", None)
    data = tracking.ConversionInput(transaction_id="t-1", amount_minor=1000, currency="USD", coupon="mine10")
    conversion, _created = tracking.record_conversion(program, data, {"t": 1})
    db.session.commit()
    page = client.get(f"/partner/conversions/{conversion.id}").get_data(as_text=True)
    assert "credited by your coupon code MINE10" in page


def test_a_decision_goes_back_to_the_list_as_it_was_and_never_elsewhere(client, app, db, program, login_as):
    partner = PartnerFactory(ref_code="pat")
    coupon = coupons.add_coupon(partner, "PAT-BACK", None)
    db.session.commit()
    login_as(Role.MANAGER)
    with app.test_request_context():
        origin = app.config["PORTAL_BASE_URL"].rstrip("/")
    path = f"/admin/coupons/{coupon.id}/disable"
    filtered = f"{origin}/admin/coupons?status=active&q=pat"
    for referrer, expected in [
        (filtered, "/admin/coupons?status=active&q=pat"),  # the operator's filters kept
        (f"{origin}/admin/partners", "/admin/coupons"),  # another page of the site: the list
        ("https://evil.example/admin/coupons", "/admin/coupons"),  # another site: never
        (f"{origin}//evil.example/admin/coupons", "/admin/coupons"),
        (None, "/admin/coupons"),
    ]:
        headers = {"Referer": referrer} if referrer else {}
        response = client.post(path, headers=headers)
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.removeprefix(origin) == expected, (referrer, location)
