"""The partner dashboard's breakdown by coupon code, and its CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
import time_machine

from portal.models import Role
from portal.services import coupons, tracking
from portal.services.tracking import ConversionInput, SignupInput
from tests.factories import PartnerFactory

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 15, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _sale(program, tx: str, amount: int, **attribution):
    data = ConversionInput(transaction_id=tx, amount_minor=amount, currency="USD", **attribution)
    return tracking.record_conversion(program, data, {"tx": tx})[0]


def test_sales_and_signups_by_code(client, db, program, login_as):
    program.fraud_duplicate_order = False
    partner = login_as(Role.PARTNER).partner
    other = PartnerFactory(ref_code="other")
    db.session.flush()
    coupons.add_coupon(partner, "PAT10", None)
    coupons.add_coupon(partner, "PAT-PODCAST", None)
    coupons.add_coupon(other, "OTHER5", None)
    _sale(program, "a", 10_000, coupon="pat10")
    refunded = _sale(program, "b", 5_000, coupon="PAT10")
    tracking.refund_conversion(refunded, 1_000, "one item back")
    _sale(program, "c", 2_000, coupon="pat-podcast")
    _sale(program, "d", 7_000, ref=partner.ref_code)  # no code: not in the breakdown
    _sale(program, "e", 3_000, coupon="OTHER5")  # the other partner's
    tracking.record_signup(program, SignupInput(customer_id="cus-1", coupon="pat-podcast"), {"c": 1})
    db.session.commit()

    page = client.get("/partner/?range=7d").get_data(as_text=True)
    assert 'data-testid="by-coupon"' in page
    assert "OTHER5" not in page

    response = client.get("/partner/stats/coupon.csv?range=7d")
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert rows[0][:6] == ["Coupon code", "Clicks", "Unique clicks", "Bot clicks", "Signups", "Conversions"]
    by_code = {row[0]: row for row in rows[1:]}
    assert set(by_code) == {"PAT10", "PAT-PODCAST"}
    headers = rows[0]
    sales, commission, signups = headers.index("Sales"), headers.index("Commission"), headers.index("Signups")
    assert (by_code["PAT10"][sales], by_code["PAT10"][commission]) == ("140.00", "14.00")
    assert (by_code["PAT-PODCAST"][sales], by_code["PAT-PODCAST"][commission]) == ("20.00", "2.00")
    assert (by_code["PAT10"][signups], by_code["PAT-PODCAST"][signups]) == ("0", "1")


def test_the_operators_see_every_code(client, db, program, login_as):
    program.fraud_duplicate_order = False
    pat = PartnerFactory(ref_code="pat")
    sam = PartnerFactory(ref_code="sam")
    db.session.flush()
    coupons.add_coupon(pat, "PAT10", None)
    coupons.add_coupon(sam, "SAM5", None)
    _sale(program, "a", 10_000, coupon="pat10")
    _sale(program, "b", 30_000, coupon="sam5")
    _sale(program, "c", 5_000, coupon="unknown-1")  # nobody's: not a row
    login_as(Role.MANAGER)
    page = client.get("/admin/?range=7d").get_data(as_text=True)
    assert 'data-testid="coupons"' in page and "PAT10 (pat)" in page and "SAM5 (sam)" in page
    response = client.get("/admin/stats/coupons.csv?range=7d")
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    sales = rows[0].index("Sales")
    assert [(row[0], row[sales]) for row in rows[1:]] == [("SAM5 (sam)", "300.00"), ("PAT10 (pat)", "100.00")]
