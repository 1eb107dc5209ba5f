"""Sales in another currency than the program's, through the API: converted at the rate of
their day, held without one and converted when it arrives, refunded at the sale's rate."""

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Commission, Conversion, ExchangeRate, OutboxEvent, Refund
from portal.models.types import utcnow
from portal.services import fx, tracking
from portal.services.ledger import check_ledger
from portal.services.rewards import round_half_even

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
DAY = NOW.date()

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _rate(db, base, quote, day, rate):
    db.session.add(
        ExchangeRate(base=base, quote=quote, day=day, rate=rate, source="ecb", created_at=utcnow())
    )
    db.session.commit()


def _lines(db, tx):
    conversion = db.session.scalars(sa.select(Conversion).where(Conversion.transaction_id == tx)).one()
    return conversion, list(
        db.session.scalars(sa.select(Commission).where(Commission.conversion_id == conversion.id))
    )


def _event_types(db, conversion):
    return [
        e.type
        for e in db.session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id))
        if e.type.startswith("conversion.") and e.data.get("conversion_id") == conversion.id
    ]


def test_a_yen_sale_is_converted_at_the_ecb_rate_of_its_day_and_earns_on_it(db, api):
    _rate(db, "EUR", "USD", DAY, "1.0812")
    _rate(db, "EUR", "JPY", DAY, "162.47")
    response = api.sale("jp-1", "9500", "JPY")
    assert response.status_code == 201, response.json
    body = response.json["conversion"]
    rate = fx.rate_text(Fraction("1.0812") / Fraction("162.47"))
    # ¥9,500 × 0.00665476703391 = $63.2202868… → $63.22
    assert (body["status"], body["amount"], body["currency"]) == ("pending", "63.22", "USD")
    assert body["original"] == {"amount": "9500", "refunded_amount": "0", "currency": "JPY"}
    assert body["exchange_rate"] == {"rate": rate, "day": "2026-11-20", "source": "ecb via EUR"}
    conversion, lines = _lines(db, "jp-1")
    assert (conversion.amount_minor, conversion.original_amount_minor) == (6322, 9500)
    assert lines and sum(line.amount_minor for line in lines) == int(
        body["commission"]["amount"].replace(".", "")
    )
    assert _event_types(db, conversion) == ["conversion.created"]
    assert check_ledger() == []


def test_a_kuwaiti_dinar_sale_keeps_three_decimals(db, api):
    _rate(db, "KWD", "USD", DAY, "3.2531")
    response = api.sale("kw-1", "12.345", "KWD")
    assert response.status_code == 201, response.json
    # 12.345 KWD × 3.2531 = 40.1595195 USD → 40.16
    assert response.json["conversion"]["amount"] == "40.16"
    assert response.json["conversion"]["original"]["amount"] == "12.345"


def test_without_a_rate_the_sale_is_held_then_converted_and_earns_when_one_arrives(db, api, runner, tmp_path):
    response = api.sale("jp-2", "20000", "JPY")
    assert response.status_code == 201, response.json
    body = response.json["conversion"]
    assert (body["status"], body["amount"], body["exchange_rate"], body["commission"]) == (
        "held",
        None,
        None,
        None,
    )
    conversion, lines = _lines(db, "jp-2")
    assert lines == [] and conversion.amount_minor == 0
    assert tracking.count_waiting_for_rate() == 1
    # A retry of the held sale is answered from the row, not recorded twice.
    assert api.sale("jp-2", "20000", "JPY").status_code == 200

    # A rate 8 days before the sale's day is too old; the ECB's file for the day converts it.
    old = tmp_path / "old.csv"
    old.write_text(f"Date,USD,JPY\n{(DAY - timedelta(days=8)).isoformat()},1.07,160.00\n")
    result = runner.invoke(args=["portal", "import-rates", str(old)])
    assert result.exit_code == 0, result.output
    assert "converted that were waiting for a rate: 0; still waiting: 1" in result.output
    day_file = tmp_path / "eurofxref.csv"
    day_file.write_text("Date, USD, JPY, \n20 November 2026, 1.0812, 162.47, \n")
    result = runner.invoke(args=["portal", "import-rates", str(day_file)])
    assert result.exit_code == 0, result.output
    assert "Imported 2 rates for 1 days (2026-11-20 to 2026-11-20)" in result.output
    assert "waiting for a rate: 1; still waiting: 0" in result.output

    db.session.expire_all()
    body = api.get("/conversions/jp-2").json["conversion"]
    assert (body["status"], body["amount"]) == ("pending", "133.10")  # ¥20,000 × 0.006654767… = 133.095…
    conversion, lines = _lines(db, "jp-2")
    assert sum(line.amount_minor for line in lines) > 0
    assert _event_types(db, conversion) == ["conversion.held", "conversion.created"]
    assert check_ledger() == []


def test_a_rate_within_the_seven_days_before_converts_a_held_sale(db, api):
    assert api.sale("jp-3", "1000", "JPY").json["conversion"]["status"] == "held"
    _rate(db, "JPY", "USD", DAY - timedelta(days=7), "0.0066")
    assert tracking.convert_waiting(_program(db)) == 1
    db.session.commit()
    body = api.get("/conversions/jp-3").json["conversion"]
    assert (body["status"], body["amount"], body["exchange_rate"]["day"]) == ("pending", "6.60", "2026-11-13")


def _program(db):
    from portal.services.program import get_program

    return get_program()


def test_refunds_in_the_sales_currency_at_its_rate_add_up_to_the_whole(db, api):
    _rate(db, "JPY", "USD", DAY, "0.00667")
    assert api.sale("jp-4", "9999", "JPY").json["conversion"]["amount"] == "66.69"  # 66.69333
    first = api.refund("jp-4", amount="3333", refund_id="r1")
    assert first.status_code == 200, first.json
    assert first.json["conversion"]["original"]["refunded_amount"] == "3333"
    assert first.json["conversion"]["refunded_amount"] == "22.23"  # 22.23111
    second = api.refund("jp-4", amount="3333", refund_id="r2").json["conversion"]
    assert second["refunded_amount"] == "44.46"  # 6,666 × 0.00667 = 44.46222
    # The rest, without an amount: everything that is left, and the sale is rejected (refund).
    last = api.refund("jp-4", refund_id="r3").json["conversion"]
    assert (last["refunded_amount"], last["amount"], last["status"]) == ("66.69", "66.69", "rejected")
    assert last["rejection_reason"] == "refund"
    # A refund in the program's currency's decimals is refused: the sale is in yen.
    assert api.refund("jp-4", amount="1.50").status_code == 422
    conversion, lines = _lines(db, "jp-4")
    assert sum(line.amount_minor for line in lines) == 0
    refunds = db.session.scalars(sa.select(Refund).where(Refund.conversion_id == conversion.id)).all()
    assert [(r.amount_minor, r.currency) for r in refunds] == [(3333, "JPY"), (3333, "JPY"), (3333, "JPY")]
    assert check_ledger() == []


def test_a_refund_beyond_32_bits_of_minor_units_is_stored(db, api):
    """IDR 30,000,000.00 (about 1,900 dollars) is 3,000,000,000 minor units: more than a 32-bit
    column holds. The sale's original amount always had 64 bits; its refunds have them too
    (PostgreSQL answered 500, "integer out of range", before migration 0022)."""
    _rate(db, "IDR", "USD", DAY, "0.0000630")
    sold = api.sale("id-1", "30000000.00", "IDR")
    assert sold.status_code == 201, sold.json
    assert sold.json["conversion"]["amount"] == "1890.00"
    part = api.refund("id-1", amount="25000000.00", refund_id="r1")
    assert part.status_code == 200, part.json
    assert part.json["conversion"]["original"]["refunded_amount"] == "25000000.00"
    assert part.json["conversion"]["refunded_amount"] == "1575.00"
    rest = api.refund("id-1", refund_id="r2")
    assert rest.status_code == 200, rest.json
    assert rest.json["conversion"]["status"] == "rejected"
    conversion, lines = _lines(db, "id-1")
    refunds = db.session.scalars(sa.select(Refund).where(Refund.conversion_id == conversion.id)).all()
    assert sorted(r.amount_minor for r in refunds) == [500_000_000, 2_500_000_000]
    assert sum(line.amount_minor for line in lines) == 0
    # A retry of the large refund is answered from what was stored, not refunded again.
    again = api.refund("id-1", amount="25000000.00", refund_id="r1")
    assert again.status_code == 200 and again.json == part.json
    assert check_ledger() == []


def test_a_refund_while_held_counts_when_the_rate_arrives(db, api):
    assert api.sale("jp-5", "10000", "JPY").json["conversion"]["status"] == "held"
    refunded = api.refund("jp-5", amount="2500", refund_id="r1")
    assert refunded.status_code == 200, refunded.json
    assert refunded.json["conversion"]["status"] == "held"
    assert check_ledger() == []
    _rate(db, "JPY", "USD", DAY, "0.0066")
    tracking.convert_waiting(_program(db))
    db.session.commit()
    body = api.get("/conversions/jp-5").json["conversion"]
    assert (body["amount"], body["refunded_amount"], body["status"]) == ("66.00", "16.50", "pending")
    _conversion, lines = _lines(db, "jp-5")
    earned = sum(line.amount_minor for line in lines if line.amount_minor > 0)
    reversed_ = -sum(line.amount_minor for line in lines if line.amount_minor < 0)
    assert reversed_ == round_half_even(earned * 1650, 6600)  # the share refunded, half-even
    assert check_ledger() == []


def test_a_sale_refunded_in_full_while_held_is_rejected_and_still_gets_its_amounts(db, api):
    api.sale("jp-6", "10000", "JPY")
    body = api.refund("jp-6").json["conversion"]
    assert (body["status"], body["rejection_reason"]) == ("rejected", "refund")
    _rate(db, "JPY", "USD", DAY, "0.0066")
    tracking.convert_waiting(_program(db))
    db.session.commit()
    body = api.get("/conversions/jp-6").json["conversion"]
    assert (body["amount"], body["refunded_amount"], body["status"]) == ("66.00", "66.00", "rejected")
    assert _lines(db, "jp-6")[1] == []
    assert check_ledger() == []


def test_a_converted_sale_above_the_programs_maximum_is_refused_and_nothing_is_saved(db, api, program):
    program.max_sale_minor = 10_000  # $100.00
    db.session.commit()
    _rate(db, "JPY", "USD", DAY, "0.0066")
    response = api.sale("jp-7", "20000", "JPY")  # $132.00
    assert response.status_code == 422
    assert "amount" in response.json["error"]["fields"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 0


def test_the_database_refuses_to_convert_a_sale_twice_or_rewrite_its_original(db, api):
    _rate(db, "JPY", "USD", DAY, "0.0066")
    api.sale("jp-8", "10000", "JPY")
    conversion, _rows = _lines(db, "jp-8")
    for statement in (
        "UPDATE conversions SET amount_minor = amount_minor + 1 WHERE id = :id",
        "UPDATE conversions SET fx_rate = '0.007' WHERE id = :id",
        "UPDATE conversions SET original_amount_minor = 1 WHERE id = :id",
        "UPDATE conversions SET original_currency = 'EUR' WHERE id = :id",
    ):
        with pytest.raises(sa.exc.DatabaseError, match="never change"), db.session.begin_nested():
            db.session.execute(sa.text(statement), {"id": conversion.id})
    db.session.rollback()


def test_the_database_refuses_a_held_sale_counting_without_a_rate(db, api):
    api.sale("jp-9", "10000", "JPY")
    conversion, _rows = _lines(db, "jp-9")
    with pytest.raises(sa.exc.IntegrityError), db.session.begin_nested():
        db.session.execute(
            sa.text("UPDATE conversions SET status = 'pending' WHERE id = :id"), {"id": conversion.id}
        )
    db.session.rollback()


@pytest.mark.parametrize("currency", ["XAU", "HRK", "jpy"])
def test_a_code_that_is_not_a_currency_is_a_422(db, api, currency):
    response = api.sale("bad-1", "10", currency)
    assert response.status_code == 422
    assert list(response.json["error"]["fields"]) == ["currency"]


def test_a_sale_in_the_programs_currency_has_no_original_and_no_rate(db, api):
    body = api.sale("us-1", "49.90", "USD").json["conversion"]
    assert (body["original"], body["exchange_rate"], body["amount"]) == (None, None, "49.90")
    conversion, _rows = _lines(db, "us-1")
    assert conversion.original_currency is None and conversion.fx_rate is None


def test_the_same_day_from_two_sources_the_direct_pair_wins(db, api):
    _rate(db, "EUR", "USD", DAY, "1.0812")
    _rate(db, "EUR", "JPY", DAY, "162.47")
    _rate(db, "JPY", "USD", DAY, "0.0067")
    assert api.sale("jp-10", "10000", "JPY").json["conversion"]["exchange_rate"]["rate"] == "0.0067"


def test_a_sale_dated_on_another_day_takes_that_days_rate(db, api):
    _rate(db, "JPY", "USD", date(2026, 11, 18), "0.0065")
    _rate(db, "JPY", "USD", DAY, "0.0067")
    body = api.sale("jp-11", "10000", "JPY", occurred_at="2026-11-18T22:00:00Z").json["conversion"]
    assert (body["amount"], body["exchange_rate"]["day"]) == ("65.00", "2026-11-18")


def test_the_jobs_convert_a_sale_held_while_its_rate_was_being_saved(db, api):
    """The sale and the rate committed at once, neither seeing the other: run-triggers sweeps."""
    from portal.jobs import run_triggers

    assert api.sale("jp-12", "1000", "JPY").json["conversion"]["status"] == "held"
    _rate(db, "JPY", "USD", DAY, "0.0066")  # stored without converting anything
    assert tracking.count_waiting_for_rate() == 1
    report = run_triggers()
    assert report.converted == 1 and "1 held sales converted" in str(report)
    assert api.get("/conversions/jp-12").json["conversion"]["status"] == "pending"
    assert run_triggers().converted == 0
