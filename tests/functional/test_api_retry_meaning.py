"""A retry is told from a different request by what it means, not by how it is written.

A brand's server that retries a sale, signup or refund may serialise it again differently:
"49.9" for "49.90", another time-zone offset for the same instant, keys in another order.
That is the same request (200, nothing more written), not a conflict (409); a different
amount, instant or reason still is one. Rows written before this rule hold the digest of
the raw body, and a byte-identical retry of one still answers 200.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from portal.models import Conversion, Refund, Signup
from portal.services import tracking

pytestmark = pytest.mark.money


def _count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.mark.parametrize(
    ("first", "retry"),
    [
        ({"amount": "49.90"}, {"amount": "49.9"}),
        ({"amount": "49.90"}, {"amount": "49.900"}),
        (
            {"amount": "10.00", "occurred_at": "2026-11-30T09:00:00Z"},
            {"amount": "10", "occurred_at": "2026-11-30T10:00:00+01:00"},
        ),
    ],
    ids=["trailing-zero-dropped", "trailing-zero-added", "same-instant-other-offset"],
)
def test_a_sale_retried_in_other_words_is_the_same_sale(api, db, first, retry):
    assert api.sale("tx-1", currency="USD", **first).status_code == 201
    again = api.sale("tx-1", currency="USD", **retry)
    assert again.status_code == 200, again.get_json()
    assert _count(db, Conversion) == 1


@pytest.mark.parametrize(
    "retry",
    [
        {"amount": "49.91"},
        {"amount": "49.90", "occurred_at": "2026-11-30T09:00:01Z"},
        {"amount": "49.90", "product_id": "x"},
    ],
    ids=["other-amount", "other-instant", "other-product"],
)
def test_a_sale_with_other_details_is_still_a_conflict(api, db, retry):
    assert (
        api.sale("tx-1", amount="49.90", currency="USD", occurred_at="2026-11-30T09:00:00Z").status_code
        == 201
    )
    again = api.sale("tx-1", currency="USD", **retry)
    assert again.status_code == 409
    assert again.get_json()["error"]["fields"] == ["transaction_id"] or "transaction_id" in str(
        again.get_json()
    )


def test_a_refund_retried_in_other_words_refunds_once(api, db):
    assert api.sale("tx-1", "49.90", "USD").status_code == 201
    first = api.refund("tx-1", amount="10.00", reason="damaged", refund_id="r-1")
    assert first.status_code in (200, 201), first.get_json()
    again = api.refund("tx-1", refund_id="r-1", reason="damaged", amount="10")
    assert again.status_code == 200, again.get_json()
    assert _count(db, Refund) == 1
    other = api.refund("tx-1", amount="10.01", reason="damaged", refund_id="r-1")
    assert other.status_code == 409


def test_a_signup_retried_with_another_offset_is_the_same_signup(api, db):
    body = {"customer_id": "c-1", "ref": "pat", "occurred_at": "2026-11-30T09:00:00+00:00"}
    assert api.post("/signups", body).status_code == 201
    again = api.post("/signups", {**body, "occurred_at": "2026-11-30T04:00:00-05:00"})
    assert again.status_code == 200, again.get_json()
    assert _count(db, Signup) == 1


def test_a_row_written_before_the_rule_still_answers_a_byte_identical_retry(api, db):
    """Its stored digest is the raw body's (what every row held until now)."""
    body = {"transaction_id": "tx-old", "amount": "49.9", "currency": "USD", "ref": "pat"}
    assert api.post("/conversions", body).status_code == 201
    conversion = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "tx-old")).one()
    conversion.request_fingerprint = tracking.fingerprint(body)
    db.session.commit()
    assert api.post("/conversions", body).status_code == 200
    assert api.post("/conversions", {**body, "amount": "49.91"}).status_code == 409


def test_an_amount_may_carry_trailing_zeros_but_nothing_finer_than_the_minor_unit(api, db):
    """As the OpenAPI document and README say: "49.900" is 49.90 USD; "49.905" is a 422 that
    names the field and says why."""
    stored = api.sale("tx-zeros", amount="49.900", currency="USD")
    assert stored.status_code == 201
    assert stored.get_json()["conversion"]["amount"] == "49.90"
    finer = api.sale("tx-finer", amount="49.905", currency="USD")
    assert finer.status_code == 422
    [message] = finer.get_json()["error"]["fields"]["amount"]
    assert "no finer than the minor unit of USD" in message
    assert _count(db, Conversion) == 1
