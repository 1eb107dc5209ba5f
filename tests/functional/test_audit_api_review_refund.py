"""Audit: a sale refunded in part while it waits for an operator's review, then approved."""

import pytest
import sqlalchemy as sa

from portal.models import Commission, Conversion
from portal.services.ledger import check_ledger
from tests.functional.test_api import sale

pytestmark = pytest.mark.postgres


def _held_for_review(api) -> None:
    # The same customer and amount again within minutes: the second sale waits for review.
    assert api.post("/conversions", sale(ref="pat", customer_id="c9")).status_code == 201
    second = api.post("/conversions", sale(transaction_id="order-2", ref="pat", customer_id="c9"))
    assert second.json["conversion"]["status"] == "review"


def _net_commission(db, transaction_id: str) -> int:
    return db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
        .join(Conversion, Conversion.id == Commission.conversion_id)
        .where(Conversion.transaction_id == transaction_id)
    )


def test_a_sale_refunded_in_part_while_in_review_earns_only_on_what_is_left_once_approved(
    client, db, api, login_as
):
    _held_for_review(api)
    refunded = api.post("/conversions/order-2/refund", {"amount": "39.92", "refund_id": "RMA-7"})
    assert refunded.status_code == 200
    assert refunded.json["conversion"]["refunded_amount"] == "39.92"
    conversion = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "order-2")).one()

    login_as("manager")
    assert client.post(f"/admin/conversions/{conversion.id}/approve").status_code == 302

    # 10 % of the 9.98 left, as a sale of 49.90 refunded 39.92 after it earned keeps (499 - 399).
    assert _net_commission(db, "order-2") == 100
    assert api.get("/conversions/order-2").json["conversion"]["commission"]["amount"] == "1.00"
    assert check_ledger() == []


def test_an_approved_sale_earns_what_the_same_sale_earns_when_refunded_after_approval(
    client, db, api, login_as
):
    _held_for_review(api)
    conversion = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == "order-2")).one()
    login_as("manager")
    assert client.post(f"/admin/conversions/{conversion.id}/approve").status_code == 302
    assert api.post("/conversions/order-2/refund", {"amount": "39.92"}).status_code == 200

    assert _net_commission(db, "order-2") == 100
