"""Audit: text fields of API bodies that PostgreSQL cannot store (a NUL character)."""

import pytest
import sqlalchemy as sa

from portal.models import Conversion, Refund, Signup

pytestmark = pytest.mark.postgres


def test_a_refund_reason_with_a_nul_is_a_422_naming_it_and_refunds_nothing(db, api):
    sale = {"transaction_id": "order-1", "amount": "49.90", "currency": "USD", "ref": "pat"}
    assert api.post("/conversions", sale).status_code == 201

    response = api.post("/conversions/order-1/refund", {"amount": "10.00", "reason": "one\x00item"})

    assert response.status_code == 422
    assert set(response.json["error"]["fields"]) == {"reason"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Refund)) == 0
    assert db.session.scalars(sa.select(Conversion)).one().refunded_minor == 0


def test_a_signup_email_with_a_nul_is_a_422_naming_it_and_saves_nothing(db, api):
    response = api.post("/signups", {"customer_id": "cus-1", "ref": "pat", "email": "a\x00b@example.org"})

    assert response.status_code == 422
    assert set(response.json["error"]["fields"]) == {"email"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signup)) == 0
