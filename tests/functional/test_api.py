"""The tracking API through HTTP: the whole money path's first half, every error code."""

from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
import time_machine

from config import TestingConfig
from portal import create_app
from portal.models import AuditEvent, Click, Commission, Conversion, PartnerStatus, Refund, Signup
from portal.models.types import utcnow
from portal.services import clicks
from portal.services.api_keys import create_api_key, revoke_api_key
from tests.factories import PartnerFactory, UserFactory

BROWSER = {"User-Agent": "Mozilla/5.0 Chrome/156.0"}


@pytest.fixture(autouse=True)
def _fresh_caches():
    clicks.forget_target()
    clicks.forget_routing()
    yield
    clicks.forget_target()
    clicks.forget_routing()


@pytest.fixture
def api(client, db, program):
    _key, plain = create_api_key("tests", None)
    db.session.commit()

    class Api:
        key = plain
        headers: ClassVar[dict] = {"Authorization": f"Bearer {plain}"}

        def post(self, path, json=None, **kwargs):
            return client.post(f"/api/v1{path}", json=json, headers=self.headers, **kwargs)

        def get(self, path):
            return client.get(f"/api/v1{path}", headers=self.headers)

    return Api()


@pytest.fixture
def partner(db, program):
    partner = PartnerFactory(ref_code="pat", user__email="pat@example.org")
    db.session.commit()
    return partner


def click_id_for(client, code="pat") -> str:
    response = client.get(f"/go/{code}", headers=BROWSER)
    return parse_qs(urlsplit(response.headers["Location"]).query)["click_id"][0]


def sale(**overrides) -> dict:
    return {"transaction_id": "order-1", "amount": "49.90", "currency": "USD", **overrides}


def test_click_signup_conversion_refund(client, db, api, partner):
    click_id = click_id_for(client)
    signup = api.post(
        "/signups", {"customer_id": "cus-1", "click_id": click_id, "email": "buyer@example.org"}
    )
    assert signup.status_code == 201
    assert signup.json["signup"] | {"occurred_at": None} == {
        "customer_id": "cus-1",
        "attributed": True,
        "partner_ref": "pat",
        "attributed_by": "click_id",
        "note": None,
        "click_id": click_id,
        "coupon": None,
        "occurred_at": None,
    }

    created = api.post("/conversions", sale(customer_id="cus-1", product_id="tent-2p"))
    assert created.status_code == 201
    conversion = created.json["conversion"]
    assert conversion["status"] == "pending"
    assert conversion["rejection_reason"] is None
    assert conversion["partner_ref"] == "pat"
    assert conversion["attributed_by"] == "customer"
    assert conversion["commission"]["amount"] == "4.99"  # 10 % of 49.90, rounded half up
    assert conversion["commission"]["currency"] == "USD"
    assert conversion["commission"]["status"] == "pending"
    row = db.session.scalars(sa.select(Conversion)).one()
    assert row.amount_minor == 4990
    assert isinstance(row.amount_minor, int)
    assert row.signup.click_id == click_id
    assert (row.commissions[0].confirm_after - row.occurred_at) == timedelta(days=30)

    part = api.post("/conversions/order-1/refund", {"amount": "19.96", "reason": "one item back"})
    assert part.status_code == 200
    assert part.json["conversion"]["status"] == "pending"
    assert part.json["conversion"]["refunded_amount"] == "19.96"
    assert part.json["conversion"]["commission"]["amount"] == "2.99"  # 4.99 - round(4.99 x 40 %)

    full = api.post("/conversions/order-1/refund")
    assert full.json["conversion"]["status"] == "rejected"
    assert full.json["conversion"]["rejection_reason"] == "refund"
    assert full.json["conversion"]["commission"] == full.json["conversion"]["commission"] | {
        "amount": "0.00",
        "status": "reversed",
    }
    lines = db.session.scalars(sa.select(Commission).order_by(Commission.id)).all()
    assert [(line.kind, line.amount_minor, line.reason_code) for line in lines] == [
        ("base", 499, None),
        ("reversal", -200, "refund"),
        ("reversal", -299, "refund"),
    ]
    assert api.get("/conversions/order-1").json == full.json
    # refunding what is fully refunded changes nothing
    assert api.post("/conversions/order-1/refund").json == full.json
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) >= 2


def test_click_id_beats_ref(client, db, api, partner):
    other = PartnerFactory(ref_code="other")
    db.session.commit()
    response = api.post("/conversions", sale(click_id=click_id_for(client), ref="other"))
    assert response.json["conversion"]["partner_ref"] == "pat"
    assert response.json["conversion"]["attributed_by"] == "click_id"
    assert other.id


def test_attribution_by_ref_alone(db, api, partner):
    response = api.post("/conversions", sale(ref="PAT"))
    assert response.json["conversion"]["partner_ref"] == "pat"
    assert response.json["conversion"]["attributed_by"] == "ref"


def test_unknown_click_falls_back_to_ref(db, api, partner):
    response = api.post("/conversions", sale(click_id="0" * 32, ref="pat"))
    assert response.json["conversion"]["attributed_by"] == "ref"


def test_unattributed_sale_is_recorded_without_commission(db, api, partner):
    response = api.post("/conversions", sale(ref="nobody"))
    assert response.status_code == 201
    assert response.json["conversion"]["partner_ref"] is None
    assert response.json["conversion"]["commission"] is None
    assert db.session.scalars(sa.select(Conversion)).one().attribution_note == "unknown ref"


def test_click_older_than_the_cookie_window_is_rejected_out_of_window(client, db, api, partner):
    with time_machine.travel(utcnow() - timedelta(days=31)):
        click_id = click_id_for(client)
    response = api.post("/conversions", sale(click_id=click_id))
    conversion = response.json["conversion"]
    assert conversion["partner_ref"] == "pat"  # the partner sees it, with the reason
    assert conversion["status"] == "rejected"
    assert conversion["rejection_reason"] == "out_of_window"
    assert conversion["commission"] is None


def test_sale_inside_the_window_by_occurred_at(client, db, api, partner):
    with time_machine.travel(utcnow() - timedelta(days=31)):
        click_id = click_id_for(client)
    when = (utcnow() - timedelta(days=29)).isoformat()
    response = api.post("/conversions", sale(click_id=click_id, occurred_at=when))
    assert response.json["conversion"]["status"] == "pending"


def test_suspended_partner_does_not_earn(client, db, api, partner):
    click_id = click_id_for(client)
    partner.status = PartnerStatus.SUSPENDED
    db.session.commit()
    response = api.post("/conversions", sale(click_id=click_id))
    assert response.json["conversion"]["partner_ref"] is None
    assert response.json["conversion"]["commission"] is None
    assert "suspended" in db.session.scalars(sa.select(Conversion)).one().attribution_note


def test_same_transaction_twice_creates_nothing_new(db, api, partner):
    first = api.post("/conversions", sale(ref="pat"))
    again = api.post("/conversions", sale(ref="pat"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Commission)) == 1
    different = api.post("/conversions", sale(ref="pat", amount="50.00"))
    assert different.status_code == 409
    assert different.json["error"]["code"] == "conflict"
    assert "transaction_id" in different.json["error"]["fields"]


def test_signup_twice(db, api, partner):
    assert api.post("/signups", {"customer_id": "c1", "ref": "pat"}).status_code == 201
    assert api.post("/signups", {"customer_id": "c1", "ref": "pat"}).status_code == 200
    assert api.post("/signups", {"customer_id": "c1", "ref": "zzz"}).status_code == 409
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signup)) == 1


# --- fraud rules -------------------------------------------------------------------


def test_self_referral_by_email(db, api, partner):
    api.post("/signups", {"customer_id": "me", "ref": "pat", "email": "PAT@example.org"})
    signup = db.session.scalars(sa.select(Signup)).one()
    assert signup.partner_id is None
    assert "self-referral" in signup.attribution_note


def test_self_referral_by_email_on_a_sale(db, api, program, partner):
    program.fraud_self_referral = False
    db.session.commit()
    api.post("/signups", {"customer_id": "me", "ref": "pat", "email": "pat@example.org"})
    program.fraud_self_referral = True
    db.session.commit()
    response = api.post("/conversions", sale(customer_id="me"))
    assert response.json["conversion"]["status"] == "rejected"
    assert response.json["conversion"]["rejection_reason"] == "self_referral"


def test_self_referral_by_the_partners_own_address_is_held_for_review(client, db, api, partner):
    client.post("/login", data={"email": "pat@example.org", "password": "correct horse battery"})
    client.post("/logout")
    response = api.post("/conversions", sale(click_id=click_id_for(client)))
    assert response.json["conversion"]["status"] == "review"
    assert response.json["conversion"]["flagged_reason"] == "self_referral"
    assert response.json["conversion"]["commission"] is None


def test_suspected_duplicate_is_held_for_review(db, api, partner):
    api.post("/conversions", sale(ref="pat", customer_id="c9"))
    response = api.post("/conversions", sale(transaction_id="order-2", ref="pat", customer_id="c9"))
    assert response.json["conversion"]["status"] == "review"
    assert response.json["conversion"]["flagged_reason"] == "duplicate"


def test_rules_can_be_switched_off(client, db, api, program, partner):
    program.fraud_duplicate_order = False
    db.session.commit()
    api.post("/conversions", sale(ref="pat", customer_id="c9"))
    response = api.post("/conversions", sale(transaction_id="order-2", ref="pat", customer_id="c9"))
    assert response.json["conversion"]["status"] == "pending"


def test_review_approve_and_reject(client, db, api, login_as, partner):
    api.post("/conversions", sale(ref="pat", customer_id="c9"))
    api.post("/conversions", sale(transaction_id="order-2", ref="pat", customer_id="c9"))
    api.post("/conversions", sale(transaction_id="order-3", ref="pat", customer_id="c9"))
    second, third = (
        db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == t)).one()
        for t in ("order-2", "order-3")
    )
    manager = login_as("manager")
    queue = client.get("/admin/conversions?status=review").get_data(as_text=True)
    assert "order-2" in queue
    assert "order-3" in queue

    assert client.post(f"/admin/conversions/{second.id}/approve").status_code == 302
    db.session.refresh(second)
    assert second.status == "pending"
    assert second.reviewed_by_id == manager.id
    assert [line.amount_minor for line in second.commissions] == [499]

    missing = client.post(f"/admin/conversions/{third.id}/reject", data={"reason": "other", "note": ""})
    assert missing.status_code == 422
    assert "Say what the other reason is." in missing.get_data(as_text=True)
    bad = client.post(f"/admin/conversions/{third.id}/reject", data={"reason": "because"})
    assert bad.status_code == 422
    done = client.post(
        f"/admin/conversions/{third.id}/reject", data={"reason": "duplicate", "note": "same cart"}
    )
    assert done.status_code == 302
    db.session.refresh(third)
    assert (third.status, third.rejection_reason, third.rejection_note) == (
        "rejected",
        "duplicate",
        "same cart",
    )
    assert api.get("/conversions/order-3").json["conversion"]["rejection_reason"] == "duplicate"


def test_rejecting_a_counted_sale_reverses_its_commission(client, db, api, login_as, partner):
    api.post("/conversions", sale(ref="pat"))
    conversion = db.session.scalars(sa.select(Conversion)).one()
    login_as("admin")
    client.post(f"/admin/conversions/{conversion.id}/reject", data={"reason": "test_order"})
    db.session.refresh(conversion)
    assert [(c.kind, c.amount_minor, c.reason_code) for c in conversion.commissions] == [
        ("base", 499, None),
        ("reversal", -499, "test_order"),
    ]


# --- errors -------------------------------------------------------------------------


def test_401_without_a_key_with_a_wrong_one_and_with_a_revoked_one(client, db, api, partner):
    assert client.post("/api/v1/conversions", json=sale()).status_code == 401
    wrong = client.post("/api/v1/conversions", json=sale(), headers={"Authorization": "Bearer ppk_dead_beef"})
    assert wrong.status_code == 401
    assert wrong.json["error"]["code"] == "unauthorized"
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    key, plain = create_api_key("temp", UserFactory(role="admin"))
    revoke_api_key(key, key.created_by)
    db.session.commit()
    revoked = client.post("/api/v1/conversions", json=sale(), headers={"Authorization": f"Bearer {plain}"})
    assert revoked.status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("not json", "application/json"), ("[1, 2]", "application/json"), ('{"a": 1}', "text/plain")],
)
def test_400_for_a_body_that_is_not_a_json_object(db, api, data, content_type):
    response = api.post("/conversions", data=data, content_type=content_type)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"transaction_id", "amount", "currency"}),
        (sale(amount=49.9), {"amount"}),
        (sale(amount="49.999"), {"amount"}),
        (sale(amount="-1.00"), {"amount"}),
        (sale(amount="1e9"), {"amount"}),
        (sale(currency="usd"), {"currency"}),
        (sale(transaction_id="has space"), {"transaction_id"}),
        (sale(transaction_id="x" * 129), {"transaction_id"}),
        (sale(occurred_at="yesterday"), {"occurred_at"}),
        (sale(occurred_at="2026-11-24T10:00:00"), {"occurred_at"}),
        (sale(surprise=1), {"surprise"}),
        # Not a currency a sale is paid in (gold; withdrawn codes), or more decimals than it has.
        (sale(currency="XAU"), {"currency"}),
        (sale(currency="HRK"), {"currency"}),
        (sale(currency="JPY", amount="95.50"), {"amount"}),
        (sale(currency="KWD", amount="1.2345"), {"amount"}),
    ],
)
def test_422_names_the_offending_fields_and_saves_nothing(db, api, partner, body, fields):
    response = api.post("/conversions", body)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_failed"
    assert set(response.json["error"]["fields"]) == fields
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"customer_id"}),
        ({"customer_id": "c", "email": "nope"}, {"email"}),
        ({"customer_id": ["c"]}, {"customer_id"}),
    ],
)
def test_signup_validation(db, api, body, fields):
    response = api.post("/signups", body)
    assert response.status_code == 422
    assert set(response.json["error"]["fields"]) == fields


def test_refund_errors(db, api, partner):
    assert api.post("/conversions/missing/refund").status_code == 404
    api.post("/conversions", sale(ref="pat"))
    too_much = api.post("/conversions/order-1/refund", {"amount": "50.00"})
    assert too_much.status_code == 422
    assert "amount" in too_much.json["error"]["fields"]
    zero = api.post("/conversions/order-1/refund", {"amount": "0.00"})
    assert zero.status_code == 422
    assert api.get("/conversions/order-1").json["conversion"]["refunded_amount"] == "0.00"


def test_404_for_an_unknown_conversion(db, api):
    response = api.get("/conversions/nope")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_413_for_a_large_body(db, api):
    response = api.post("/conversions", data="x" * 70_000, content_type="application/json")
    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large"


def test_429_when_a_key_sends_too_much(database_url, db):
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_ENABLED=True,
        API_RATE_LIMIT="2 per minute",
    )
    client = app.test_client()
    headers = {"Authorization": "Bearer ppk_abcd_nope"}
    codes = [client.get("/api/v1/conversions/x", headers=headers).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    response = client.get("/api/v1/conversions/x", headers=headers)
    assert response.json["error"]["code"] == "rate_limited"


def test_openapi_document_is_valid_and_describes_every_endpoint(app, client, db):
    from openapi_spec_validator import validate

    document = client.get("/api/v1/openapi.json").json
    validate(document)
    documented = {
        (method.upper(), "/api/v1" + path.replace("{transaction_id}", "<path:transaction_id>"))
        for path, item in document["paths"].items()
        for method in item
    }
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.") and rule.endpoint != "api.openapi"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == served


def test_responses_match_the_openapi_schemas(client, db, api, partner):
    import jsonschema

    document = client.get("/api/v1/openapi.json").json
    resolver_base = {"components": document["components"]}

    def check(payload, schema_name):
        schema = {**resolver_base, "$ref": f"#/components/schemas/{schema_name}"}
        jsonschema.validate(payload, schema)

    check(api.post("/signups", {"customer_id": "c1", "ref": "pat"}).json, "SignupEnvelope")
    check(api.post("/conversions", sale(ref="pat")).json, "ConversionEnvelope")
    check(api.post("/conversions/order-1/refund", {"amount": "1.00"}).json, "ConversionEnvelope")
    check(api.post("/conversions", {}).json, "Error")
    assert Click is not None


# --- refunds: idempotent by refund_id, exact, in formatted money -------------------------

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def refunds_of(db, transaction_id="order-1") -> list[tuple[str | None, int]]:
    db.session.expire_all()
    return [
        (r.refund_id, r.amount_minor)
        for r in db.session.scalars(
            sa.select(Refund)
            .join(Conversion)
            .where(Conversion.transaction_id == transaction_id)
            .order_by(Refund.id)
        )
    ]


def test_a_retried_refund_id_answers_the_first_answer_and_refunds_once(db, api, partner):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    first = api.post("/conversions/order-1/refund", {"amount": "20.00", "refund_id": "rf-1"})
    assert first.status_code == 200
    assert first.json["conversion"]["refunded_amount"] == "20.00"
    assert first.json["conversion"]["commission"]["amount"] == "8.00"

    again = api.post("/conversions/order-1/refund", {"amount": "20.00", "refund_id": "rf-1"})
    assert again.status_code == 200
    assert again.json == first.json
    assert refunds_of(db) == [("rf-1", 2000)]

    other = api.post("/conversions/order-1/refund", {"amount": "30.00", "refund_id": "rf-2"})
    assert other.json["conversion"]["refunded_amount"] == "50.00"
    assert other.json["conversion"]["commission"]["amount"] == "5.00"
    # still the first answer, not the state of the sale now
    assert (
        api.post("/conversions/order-1/refund", {"amount": "20.00", "refund_id": "rf-1"}).json == first.json
    )
    assert refunds_of(db) == [("rf-1", 2000), ("rf-2", 3000)]
    conversion = db.session.scalars(sa.select(Conversion)).one()
    assert conversion.refunded_minor == 5000 == sum(amount for _, amount in refunds_of(db))
    assert sum(line.amount_minor for line in conversion.commissions) == 500


def test_the_same_refund_id_with_a_different_body_is_a_409(db, api, partner):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    api.post("/conversions/order-1/refund", {"amount": "20.00", "refund_id": "rf-1"})
    for body in (
        {"amount": "25.00", "refund_id": "rf-1"},
        {"amount": "20.00", "refund_id": "rf-1", "reason": "changed my mind"},
        {"refund_id": "rf-1"},
    ):
        conflict = api.post("/conversions/order-1/refund", body)
        assert conflict.status_code == 409
        assert conflict.json["error"]["code"] == "conflict"
        assert conflict.json["error"]["fields"] == {
            "refund_id": ["This refund_id was already reported with different details."]
        }
    assert refunds_of(db) == [("rf-1", 2000)]
    assert api.get("/conversions/order-1").json["conversion"]["refunded_amount"] == "20.00"


def test_a_refund_id_belongs_to_its_sale(db, api, partner):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    api.post("/conversions", sale(transaction_id="order-2", ref="pat", amount="100.00"))
    api.post("/conversions/order-1/refund", {"amount": "20.00", "refund_id": "rf-1"})
    second = api.post("/conversions/order-2/refund", {"amount": "20.00", "refund_id": "rf-1"})
    assert second.json["conversion"]["transaction_id"] == "order-2"
    assert refunds_of(db, "order-2") == [("rf-1", 2000)]


def test_every_refund_is_a_row_and_a_repeated_full_refund_without_an_id_is_a_no_op(db, api, partner):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    api.post("/conversions/order-1/refund", {"amount": "12.34"})
    full = api.post("/conversions/order-1/refund")
    assert full.status_code == 200
    assert full.json["conversion"]["status"] == "rejected"
    again = api.post("/conversions/order-1/refund", {"reason": "again"})
    assert again.status_code == 200
    assert again.json == full.json
    assert refunds_of(db) == [(None, 1234), (None, 8766)]
    conversion = db.session.scalars(sa.select(Conversion)).one()
    assert conversion.refunded_minor == conversion.amount_minor == 10_000
    assert sum(line.amount_minor for line in conversion.commissions) == 0
    # a full refund under a new refund_id after that: nothing is left, nothing is written
    late = api.post("/conversions/order-1/refund", {"refund_id": "late"})
    assert (late.status_code, late.json) == (200, full.json)
    assert len(refunds_of(db)) == 2


def test_refund_errors_show_formatted_money(db, api, partner):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    api.post("/conversions/order-1/refund", {"amount": "20.00"})
    too_much = api.post("/conversions/order-1/refund", {"amount": "80.01", "refund_id": "big"})
    assert too_much.status_code == 422
    message = "Only $80.00 of this sale is left to refund."
    assert too_much.json["error"]["message"] == message
    assert too_much.json["error"]["fields"] == {"amount": [message]}
    # a refused refund is not remembered: the same id may carry a corrected amount
    assert api.post("/conversions/order-1/refund", {"amount": "80.00", "refund_id": "big"}).status_code == 200
    assert refunds_of(db) == [(None, 2000), ("big", 8000)]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"refund_id": "x" * 101}, {"refund_id"}),
        ({"refund_id": ""}, {"refund_id"}),
        ({"refund_id": "has space"}, {"refund_id"}),
        ({"refund_id": "line\n"}, {"refund_id"}),
        ({"refund_id": ["r"]}, {"refund_id"}),
        ({"amount": "٣.٠٠"}, {"amount"}),
        ({"amount": "3.00\n"}, set()),  # surrounding blanks are trimmed, as in every amount
        ({"amount": 3}, {"amount"}),
        ({"amount": "1.001"}, {"amount"}),
        ({"amount": "-1.00"}, {"amount"}),
        ({"surprise": 1}, {"surprise"}),
    ],
)
def test_refund_bodies_are_checked(db, api, partner, body, fields):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    response = api.post("/conversions/order-1/refund", body)
    if not fields:
        assert response.status_code == 200
        return
    assert response.status_code == 422
    assert set(response.json["error"]["fields"]) == fields
    assert refunds_of(db) == []


def test_a_refund_id_of_100_characters_is_accepted(db, api, partner):
    api.post("/conversions", sale(ref="pat", amount="100.00"))
    response = api.post("/conversions/order-1/refund", {"amount": "1.00", "refund_id": "r" * 100})
    assert response.status_code == 200
    assert refunds_of(db) == [("r" * 100, 100)]


# --- time cannot be gamed ------------------------------------------------------------------


def test_the_hold_runs_from_when_the_sale_was_received(db, api, partner):
    with time_machine.travel(NOW, tick=False):
        now = api.post("/conversions", sale(ref="pat"))
        backdated = api.post(
            "/conversions",
            sale(transaction_id="order-2", ref="pat", occurred_at="2026-11-12T12:00:00Z"),
        )
    assert now.json["conversion"]["commission"]["confirm_after"] == "2027-01-01T12:00:00+00:00"
    assert backdated.json["conversion"]["status"] == "pending"
    assert backdated.json["conversion"]["occurred_at"] == "2026-11-12T12:00:00+00:00"
    # received + 30 days, not occurred_at + 30 days (2026-12-12)
    assert backdated.json["conversion"]["commission"]["confirm_after"] == "2027-01-01T12:00:00+00:00"
    stored = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "order-2")).one()
    assert stored.created_at == NOW
    assert [line.confirm_after for line in stored.commissions] == [NOW + timedelta(days=30)]


def test_a_sale_backdated_past_the_cookie_window_is_stored_rejected_out_of_window(db, api, partner):
    with time_machine.travel(NOW, tick=False):
        response = api.post("/conversions", sale(ref="pat", occurred_at="2020-01-01T00:00:00Z"))
        edge = api.post(
            "/conversions", sale(transaction_id="order-2", ref="pat", occurred_at="2026-11-02T12:00:00Z")
        )
    assert response.status_code == 201
    conversion = response.json["conversion"]
    assert (conversion["status"], conversion["rejection_reason"]) == ("rejected", "out_of_window")
    assert conversion["partner_ref"] == "pat"
    assert conversion["commission"] is None
    stored = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "order-1")).one()
    assert stored.commissions == []
    assert "30 days" in stored.rejection_note
    # exactly the window (30 days) still counts
    assert edge.json["conversion"]["status"] == "pending"


@pytest.mark.parametrize(
    ("occurred_at", "message"),
    [
        ("2027-01-01T00:00:00Z", "must not be more than 24 hours in the future"),
        ("2026-12-03T12:00:01Z", "must not be more than 24 hours in the future"),
        ("2026-12-03T13:00:00+01:00", None),  # exactly 24 hours ahead: clocks drift
        ("9999-12-31T23:59:59+14:00", "must be a date from the years 2000 to 2100"),
        ("0001-01-01T00:00:00+01:00", "must be a date from the years 2000 to 2100"),
        ("1999-12-31T23:59:59Z", "must be a date from the years 2000 to 2100"),
        ("2101-01-01T00:00:00Z", "must be a date from the years 2000 to 2100"),
    ],
)
def test_dates_outside_2000_2100_or_more_than_a_day_ahead_are_a_422(db, api, partner, occurred_at, message):
    with time_machine.travel(NOW, tick=False):
        response = api.post("/conversions", sale(ref="pat", occurred_at=occurred_at))
        signup = api.post("/signups", {"customer_id": "c1", "ref": "pat", "occurred_at": occurred_at})
    if message is None:
        assert (response.status_code, signup.status_code) == (201, 201)
        return
    for answer in (response, signup):
        assert answer.status_code == 422
        assert answer.json["error"]["fields"] == {"occurred_at": [message]}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


@pytest.mark.parametrize(
    ("amount", "status"),
    [
        ("100000000000.00", 422),
        ("1000000.01", 422),
        ("1000000.00", 201),
        ("٣.٠٠", 422),
        ("３.００", 422),
        ("3.00", 201),
    ],
)
def test_amounts_are_ascii_digits_up_to_the_programs_maximum_sale(db, api, partner, amount, status):
    response = api.post("/conversions", sale(ref="pat", amount=amount))
    assert response.status_code == status
    if status == 422:
        assert set(response.json["error"]["fields"]) == {"amount"}
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


def test_the_maximum_sale_is_the_programs_setting_and_named_in_formatted_money(db, api, program, partner):
    program.max_sale_minor = 50_000
    db.session.commit()
    refused = api.post("/conversions", sale(ref="pat", amount="500.01"))
    assert refused.status_code == 422
    assert refused.json["error"]["fields"] == {
        "amount": ["must be at most $500.00, the program's maximum sale"]
    }
    assert api.post("/conversions", sale(ref="pat", amount="500.00")).status_code == 201


def test_the_openapi_document_describes_refund_ids_and_their_answers(client, db, api, partner):
    import jsonschema

    document = client.get("/api/v1/openapi.json").json
    refund = document["paths"]["/conversions/{transaction_id}/refund"]["post"]
    assert {"200", "404", "409", "422"} <= set(refund["responses"])
    request_schema = document["components"]["schemas"]["RefundRequest"]
    assert request_schema["properties"]["refund_id"]["maxLength"] == 100
    assert (
        "maximum sale"
        in document["components"]["schemas"]["ConversionRequest"]["properties"]["amount"]["description"]
    )

    def check(payload, schema_name):
        jsonschema.validate(
            payload, {"components": document["components"], "$ref": f"#/components/schemas/{schema_name}"}
        )

    body = {"amount": "1.00", "refund_id": "RMA-1042"}
    jsonschema.validate(body, {"components": document["components"], **request_schema})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"refund_id": "x" * 101}, request_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"amount": "٣.٠٠"}, request_schema)
    api.post("/conversions", sale(ref="pat"))
    check(api.post("/conversions/order-1/refund", body).json, "ConversionEnvelope")
    check(api.post("/conversions/order-1/refund", body).json, "ConversionEnvelope")
    conflict = api.post("/conversions/order-1/refund", {"amount": "2.00", "refund_id": "RMA-1042"})
    assert conflict.status_code == 409
    check(conflict.json, "Error")
    too_large = api.post("/conversions", sale(transaction_id="order-2", amount="1000000.01"))
    assert too_large.status_code == 422
    check(too_large.json, "Error")


def test_the_api_neither_reads_nor_writes_the_session_cookie(client, db):
    """A brand's server authenticates by key: the API opens no session (cheaper) and never
    answers with a session cookie, whatever cookie the request carried."""
    client.set_cookie("session", "not-a-valid-signed-session")
    response = client.post("/api/v1/conversions", json={}, headers={"Authorization": "Bearer ppk_nope"})
    assert response.status_code == 401
    assert "session=" not in " ".join(response.headers.getlist("Set-Cookie"))
