"""Coupon codes through the tracking API: the attribution order and the codes' edge cases.

The order: click id → coupon → ref → referred customer; a coupon on the sale beats an older
click of another partner unless the program chose first touch.
"""

from datetime import timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Conversion, CouponAttribution, PartnerStatus, Signup
from portal.models.types import utcnow
from portal.services import coupons
from portal.services.api_keys import create_api_key
from tests.factories import PartnerFactory
from tests.functional.test_api import _fresh_caches, click_id_for, sale  # noqa: F401 - _fresh_caches: autouse


@pytest.fixture
def api(client, db, program):
    _key, plain = create_api_key("tests", None)
    db.session.commit()
    headers = {"Authorization": f"Bearer {plain}"}

    class Api:
        def post(self, path, json=None):
            return client.post(f"/api/v1{path}", json=json, headers=headers)

    return Api()


@pytest.fixture
def pat(db, program):
    partner = PartnerFactory(ref_code="pat", user__email="pat@example.org")
    db.session.flush()
    coupons.add_coupon(partner, "PAT10", None)
    db.session.commit()
    return partner


@pytest.fixture
def sam(db, program):
    partner = PartnerFactory(ref_code="sam", user__email="sam@example.org")
    db.session.flush()
    coupons.add_coupon(partner, "sam-podcast", None)
    db.session.commit()
    return partner


def _conversion(api, **body) -> dict:
    response = api.post("/conversions", sale(**body))
    assert response.status_code == 201, response.json
    return response.json["conversion"]


def _stored(db, transaction_id="order-1") -> Conversion:
    db.session.expire_all()
    return db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == transaction_id)).one()


# --- the code itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["PAT10", "pat10", "Pat10", "  pat10 "])
def test_a_code_attributes_whatever_its_case(api, db, pat, typed):
    body = _conversion(api, coupon=typed)
    assert body["partner_ref"] == "pat"
    assert body["attributed_by"] == "coupon"
    assert body["coupon"] == "PAT10"
    assert body["commission"]["amount"] == "4.99"
    stored = _stored(db)
    assert stored.coupon_code == "PAT10"
    assert stored.coupon_id is not None


def test_an_unknown_code_is_kept_and_attributes_nothing(api, db, pat):
    body = _conversion(api, coupon="nobody-has-this")
    assert body["partner_ref"] is None
    assert body["attributed_by"] is None
    assert body["coupon"] == "NOBODY-HAS-THIS"
    assert body["commission"] is None
    stored = _stored(db)
    assert (stored.coupon_code, stored.coupon_id, stored.attribution_note) == (
        "NOBODY-HAS-THIS",
        None,
        "unknown coupon",
    )


def test_the_shops_own_coupon_of_any_shape_is_kept_as_sent(api, db, pat):
    body = _conversion(api, coupon="SAVE 10% — Winter")
    assert body["partner_ref"] is None
    assert body["coupon"] == "SAVE 10% — Winter"


def test_an_unknown_code_leaves_the_sale_to_the_next_rule(api, db, pat, sam):
    body = _conversion(api, coupon="NOPE1", ref="sam")
    assert (body["partner_ref"], body["attributed_by"], body["coupon"]) == ("sam", "ref", "NOPE1")


def test_a_disabled_code_stops_attributing_at_once(api, db, pat):
    assert _conversion(api, coupon="pat10", transaction_id="before")["partner_ref"] == "pat"
    coupon = coupons.coupons_of(pat)[0]
    coupons.set_coupon_active(coupon, False, None)
    db.session.commit()

    body = _conversion(api, coupon="pat10", transaction_id="after")
    assert body["partner_ref"] is None
    stored = _stored(db, "after")
    assert stored.coupon_id == coupon.id  # the sale still names the program's code
    assert stored.attribution_note == "coupon PAT10 is disabled"

    coupons.set_coupon_active(coupon, True, None)
    db.session.commit()
    assert _conversion(api, coupon="pat10", transaction_id="again")["partner_ref"] == "pat"


def test_a_requested_code_attributes_nothing_until_approved(api, db, pat, make_user):
    coupons.request_coupon(pat, "PAT-NEW", "my newsletter")
    db.session.commit()
    assert _conversion(api, coupon="pat-new", transaction_id="t1")["partner_ref"] is None
    coupons.approve_coupon(coupons.coupons_of(pat)[0], make_user("manager"))
    db.session.commit()
    assert _conversion(api, coupon="pat-new", transaction_id="t2")["partner_ref"] == "pat"


def test_a_suspended_partners_code_earns_nothing(api, db, pat):
    pat.status = PartnerStatus.SUSPENDED
    db.session.commit()
    body = _conversion(api, coupon="PAT10")
    assert body["partner_ref"] is None
    assert _stored(db).attribution_note == "partner pat is suspended; not attributed"


def test_codes_are_unique_whatever_the_case_across_partners(db, pat, sam):
    from portal.errors import DomainError

    with pytest.raises(DomainError) as taken:
        coupons.add_coupon(sam, "pat10", None)
    assert taken.value.field == "code"
    with pytest.raises(DomainError):
        coupons.request_coupon(sam, "Sam-Podcast", None)


@pytest.mark.parametrize("bad", ["ab", "x" * 41, "with space", "ümlaut", "semi;colon", ""])
def test_code_shape(db, pat, bad):
    from portal.errors import DomainError

    with pytest.raises(DomainError):
        coupons.add_coupon(pat, bad, None)


# --- the attribution order -----------------------------------------------------------------------


def test_a_coupon_beats_an_older_click_of_another_partner(client, api, db, pat, sam):
    click_id = click_id_for(client, "pat")
    body = _conversion(api, click_id=click_id, coupon="SAM-PODCAST")
    assert (body["partner_ref"], body["attributed_by"]) == ("sam", "coupon")
    stored = _stored(db)
    assert stored.click_id is None  # pat's click does not count for sam's link figures
    assert stored.attribution_note == "coupon SAM-PODCAST beat an older click of another partner"


def test_first_touch_lets_the_click_win(client, api, db, program, pat, sam):
    program.coupon_attribution = CouponAttribution.FIRST_TOUCH
    db.session.commit()
    click_id = click_id_for(client, "pat")
    body = _conversion(api, click_id=click_id, coupon="SAM-PODCAST")
    assert (body["partner_ref"], body["attributed_by"], body["coupon"]) == ("pat", "click_id", "SAM-PODCAST")
    assert _stored(db).attribution_note == "first touch: the click beat coupon SAM-PODCAST"


def test_first_touch_with_a_click_out_of_the_window_goes_to_the_coupon(client, api, db, program, pat, sam):
    program.coupon_attribution = CouponAttribution.FIRST_TOUCH
    db.session.commit()
    click_id = click_id_for(client, "pat")
    with time_machine.travel(utcnow() + timedelta(days=program.cookie_window_days + 2)):
        body = _conversion(api, click_id=click_id, coupon="SAM-PODCAST")
    assert (body["partner_ref"], body["attributed_by"], body["status"]) == ("sam", "coupon", "pending")


def test_a_click_and_a_code_of_the_same_partner_count_as_the_click(client, api, db, pat):
    click_id = click_id_for(client, "pat")
    body = _conversion(api, click_id=click_id, coupon="pat10")
    assert (body["partner_ref"], body["attributed_by"], body["coupon"]) == ("pat", "click_id", "PAT10")
    stored = _stored(db)
    assert stored.click_id == click_id and stored.coupon_id is not None


def test_a_click_beats_a_ref(client, api, db, pat, sam):
    body = _conversion(api, click_id=click_id_for(client, "pat"), ref="sam")
    assert (body["partner_ref"], body["attributed_by"]) == ("pat", "click_id")


def test_a_coupon_beats_a_ref(api, db, pat, sam):
    body = _conversion(api, coupon="pat10", ref="sam")
    assert (body["partner_ref"], body["attributed_by"]) == ("pat", "coupon")


def test_a_coupon_beats_the_referred_customer(api, db, pat, sam):
    assert api.post("/signups", {"customer_id": "cus-9", "ref": "sam"}).status_code == 201
    body = _conversion(api, customer_id="cus-9", coupon="PAT10")
    assert (body["partner_ref"], body["attributed_by"]) == ("pat", "coupon")


def test_a_ref_beats_the_referred_customer(api, db, pat, sam):
    assert api.post("/signups", {"customer_id": "cus-9", "ref": "sam"}).status_code == 201
    body = _conversion(api, customer_id="cus-9", ref="pat")
    assert (body["partner_ref"], body["attributed_by"]) == ("pat", "ref")


def test_an_unknown_click_id_falls_to_the_coupon(api, db, pat):
    body = _conversion(api, click_id="not-a-click", coupon="pat10")
    assert (body["partner_ref"], body["attributed_by"]) == ("pat", "coupon")
    assert _stored(db).attribution_note == "unknown click id"


# --- signups -----------------------------------------------------------------------------------


def test_a_signup_with_a_code_refers_the_customer(api, db, pat):
    response = api.post("/signups", {"customer_id": "cus-1", "coupon": "pat10"})
    assert response.status_code == 201
    signup = response.json["signup"]
    assert (signup["partner_ref"], signup["attributed_by"], signup["coupon"]) == ("pat", "coupon", "PAT10")
    assert db.session.scalar(sa.select(Signup.coupon_code).where(Signup.customer_id == "cus-1")) == "PAT10"
    # The customer's later sale, without a code, is the partner's through the signup.
    body = _conversion(api, customer_id="cus-1")
    assert (body["partner_ref"], body["attributed_by"]) == ("pat", "customer")


# --- retries and bad input ---------------------------------------------------------------------


def test_a_retry_is_the_same_sale_and_another_code_is_a_conflict(api, db, pat, sam):
    first = api.post("/conversions", sale(coupon="pat10"))
    again = api.post("/conversions", sale(coupon="pat10"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    other = api.post("/conversions", sale(coupon="SAM-PODCAST"))
    assert other.status_code == 409
    assert other.json["error"]["code"] == "conflict"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 1


@pytest.mark.parametrize("bad", [10, "", "   ", "x" * 129, "tab\there", ["PAT10"]])
def test_a_malformed_coupon_is_a_422_naming_the_field(api, db, pat, bad):
    response = api.post("/conversions", sale(coupon=bad))
    assert response.status_code == 422
    assert list(response.json["error"]["fields"]) == ["coupon"]
    signup = api.post("/signups", {"customer_id": "c", "coupon": bad})
    assert signup.status_code == 422
    assert list(signup.json["error"]["fields"]) == ["coupon"]
