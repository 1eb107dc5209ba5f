"""The conversion API's hot path: how many SQL statements one sale costs, and that the count
does not grow with the partner's history (tier and ladder metrics come from counters kept
with each sale, never from summing past conversions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
import sqlalchemy as sa
import time_machine

from portal import lookups
from portal.models import Campaign, Conversion, LadderStep, PartnerTier, Program, Tier
from portal.services import tracking
from portal.services.api_keys import create_api_key
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory, ProgramFactory

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
MAX_STATEMENTS = 6
_tx = count(1)


def _statements_of(engine, action) -> list[str]:
    """The SQL statements ``action`` sends (savepoints of the test harness left out)."""
    seen: list[str] = []

    def listen(_conn, _cursor, statement, _parameters, _context, _executemany):
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    return seen


def _rules(db):
    silver = Tier(
        name="Silver",
        rank=1,
        rate_type="percent",
        rate_percent_bp=1200,
        rate_flat_minor=0,
        threshold_metric="conversions",
        threshold_value=5,
        period="rolling_30",
    )
    gold = Tier(
        name="Gold",
        rank=2,
        rate_type="percent",
        rate_percent_bp=1500,
        rate_flat_minor=0,
        threshold_metric="revenue",
        threshold_value=10**12,  # never reached: every sale asks whether it upgrades
        period="previous_month",
    )
    db.session.add_all([silver, gold])
    db.session.add_all(
        [
            LadderStep(threshold_conversions=20, bonus_minor=5_000),
            LadderStep(threshold_conversions=200, bonus_minor=50_000),
        ]
    )
    db.session.add(
        Campaign(
            name="Black week",
            starts_at=NOW - timedelta(days=5),
            ends_at=NOW + timedelta(days=5),
            reward="bonus",
            bonus_minor=300,
        )
    )
    db.session.flush()
    return silver


def _history(program, partner, sales: int) -> None:
    """``sales`` past sales of ``partner`` over the last 60 days, recorded as the API does."""
    for i in range(sales):
        at = NOW - timedelta(days=60) + timedelta(seconds=(60 * 86400 - 3600) * i // sales)
        tx = f"past-{next(_tx)}"
        tracking.record_conversion(
            program,
            ConversionInput(transaction_id=tx, amount_minor=2_000 + i, currency="USD", ref=partner.ref_code),
            {"tx": tx},
            received_at=at,
        )


@pytest.fixture
def setting(app, db, database_backend):
    program = ProgramFactory(fraud_duplicate_order=False)
    silver = _rules(db)
    _key, plain = create_api_key("tests", None)
    db.session.commit()
    # The look-up counter is read every TRACKING_CACHE_CHECK_SECONDS of real time: not inside
    # the one request this test counts.
    lookups.lookups().check_every = 3600
    # The outbox dispatcher runs on its own thread and connection in production, not in the
    # brand's request (the tests' default runs it inline): only the sale's statements count.
    app.config["OUTBOX_DISPATCH_MODE"] = "off"
    return program, silver, {"Authorization": f"Bearer {plain}"}


def _count_one_sale(client, db, headers, ref: str, coupon: str | None = None) -> list[str]:
    def post(tx: str) -> None:
        body = {"transaction_id": tx, "amount": "80.00", "currency": "USD", "ref": ref}
        if coupon is not None:
            body = {"transaction_id": tx, "amount": "80.00", "currency": "USD", "coupon": coupon}
        response = client.post("/api/v1/conversions", json=body, headers=headers)
        assert response.status_code == 201, response.json

    post(f"warm-{next(_tx)}")  # this process's caches warm, as they are under load
    db.session.expunge_all()  # a request in production starts with an empty session
    return _statements_of(db.engine, lambda: post(f"counted-{next(_tx)}"))


@pytest.mark.parametrize("past_sales", [10, 500])
def test_a_sale_costs_a_few_statements_however_long_the_history(client, db, setting, past_sales):
    program, silver, headers = setting
    with time_machine.travel(NOW, tick=False):
        partner = PartnerFactory()
        _history(program, partner, past_sales)
        db.session.commit()
        assert db.session.get(PartnerTier, partner.id).tier_id == silver.id  # a tier, one above it
        statements = _count_one_sale(client, db, headers, partner.ref_code)
    assert len(statements) <= MAX_STATEMENTS, "\n\n".join(statements)


def test_the_count_does_not_grow_with_the_history(client, db, setting):
    program, _silver, headers = setting
    program_id = program.id
    counts = []
    with time_machine.travel(NOW, tick=False):
        for past_sales in (10, 500):
            program = db.session.get(Program, program_id)
            partner = PartnerFactory()
            _history(program, partner, past_sales)
            db.session.commit()
            counts.append(len(_count_one_sale(client, db, headers, partner.ref_code)))
    assert counts[0] == counts[1]


def test_a_sale_with_a_coupon_code_costs_no_more(client, db, setting):
    """The code and its partner come from the per-process look-up cache, as a ref code does."""
    from portal.services import coupons

    program, _silver, headers = setting
    with time_machine.travel(NOW, tick=False):
        partner = PartnerFactory()
        db.session.flush()
        coupons.add_coupon(partner, "SPRING-26", None)
        _history(program, partner, 10)
        db.session.commit()
        ref = partner.ref_code
        with_ref = _count_one_sale(client, db, headers, ref)
        with_coupon = _count_one_sale(client, db, headers, ref, coupon="spring-26")
    assert len(with_coupon) == len(with_ref) <= MAX_STATEMENTS, "\n\n".join(with_coupon)


# A batch: the partners' locks (PostgreSQL), one SELECT of every partner's tier counters, one
# INSERT of every sale, one INSERT of every line and the rollups (one statement on PostgreSQL,
# four upserts on SQLite).
BATCH_STATEMENTS = {"sqlite": 7, "postgresql": 5}


def test_sales_written_together_cost_a_few_statements_in_all(app, client, db, setting):
    """The sale writer (portal/salewriter.py) writes concurrent requests' sales in one
    transaction, in a fixed number of statements whatever the number of sales."""
    from portal.blueprints.api.routes import _conversion_answer
    from portal.blueprints.api.schemas import read_conversion
    from portal.salewriter import Outcome, Sale
    from portal.services.program import cached_program

    program, _silver, _headers = setting
    with time_machine.travel(NOW, tick=False):
        partners = [PartnerFactory() for _ in range(10)]
        for partner in partners:
            _history(program, partner, 10)
        db.session.commit()
        refs = [partner.ref_code for partner in partners]
        writer = app.extensions["sale_writer"]

        def batch() -> list:
            with app.test_request_context():
                program = cached_program()
                bodies = [
                    {
                        "transaction_id": f"together-{next(_tx)}",
                        "amount": "80.00",
                        "currency": "USD",
                        "ref": ref,
                    }
                    for ref in refs
                ]
                return [
                    Sale(read_conversion(body, program), body, NOW, _conversion_answer) for body in bodies
                ]

        writer.write(batch())  # this process's caches warm (every partner's code), as under load
        db.session.expunge_all()
        sales = batch()
        statements = _statements_of(db.engine, lambda: writer.write(sales))
    assert [sale.outcome for sale in sales] == [Outcome.WRITTEN] * 10
    # A batch's statements are a fixed few, however many sales it holds (ten here).
    assert len(statements) <= BATCH_STATEMENTS[db.engine.dialect.name] < len(sales), "\n\n".join(statements)
    # What went in as one JSON document (PostgreSQL, ten rows) reads back as the answers said.
    db.session.expunge_all()
    for sale in sales:
        answer = sale.payload["conversion"]
        stored = db.session.scalars(
            sa.select(Conversion).where(Conversion.transaction_id == answer["transaction_id"])
        ).one()
        assert (answer["amount"], answer["partner_ref"]) == ("80.00", stored.partner.ref_code)
        lines = stored.commissions
        assert lines and all(line.explanation["rule"] for line in lines)  # the JSON came back whole
        assert answer["commission"]["amount"] == f"{sum(line.amount_minor for line in lines) / 100:.2f}"
