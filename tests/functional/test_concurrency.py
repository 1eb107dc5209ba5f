"""The same sale reported several times at once: exactly one conversion, one commission.
Sales of one partner at once earn what they would one after another, written in their
requests' transactions or many to a transaction by the sale writer.

Runs against committed data on a real database (SQLite and PostgreSQL), each
request on its own thread and connection, released together by a barrier.
"""

import threading
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import ApiKey, AuditEvent, Commission, Conversion, Partner, User
from portal.services.api_keys import create_api_key
from portal.services.ledger import without_ledger_triggers
from tests.factories import PartnerFactory, ProgramFactory
from tests.races import writers_at_once

pytestmark = pytest.mark.postgres

PARALLEL = 8
THRESHOLD = 3  # conversions: the tier the parallel sales below reach among themselves


@pytest.fixture(params=["inline", "batched"])
def committed_world(database_url, request):
    """A program, a partner and a key, committed for real; removed afterwards. The sales are
    written in their requests' own transactions, or by the sale writer's threads in batches
    (portal/salewriter.py, production's default)."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, SALE_WRITE_MODE=request.param)
    with app.app_context():
        ProgramFactory()
        partner = PartnerFactory(ref_code="race")
        _key, plain = create_api_key("race", None)
        _db.session.commit()
        ids = {"partner": partner.id, "user": partner.user_id}
    yield app, plain
    with app.app_context():
        # Throw-away rows of the ledger: removed past its no-delete triggers.
        with without_ledger_triggers(_db.session.connection()):
            _delete_rollups()
            _db.session.execute(sa.delete(Commission))
            _db.session.execute(sa.delete(Conversion))
            _db.session.execute(sa.delete(ApiKey))
            _db.session.execute(sa.delete(Partner).where(Partner.id == ids["partner"]))
            _db.session.execute(sa.delete(User).where(User.id == ids["user"]))
            from portal.models import Program

            _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


def _delete_rollups():
    # The program-wide counters are not keyed by partner, so deleting the partner leaves them.
    from portal.services.rollups import GRAINS

    for grain in GRAINS:
        _db.session.execute(sa.delete(grain.table))


def _post_together(app, plain, bodies):
    barrier = threading.Barrier(len(bodies))
    results = [None] * len(bodies)

    def worker(index, body):
        client = app.test_client()
        barrier.wait(timeout=10)
        response = client.post("/api/v1/conversions", json=body, headers={"Authorization": f"Bearer {plain}"})
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=worker, args=(i, b)) for i, b in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_duplicates_make_one_conversion(committed_world):
    app, plain = committed_world
    body = {"transaction_id": "race-1", "amount": "80.00", "currency": "USD", "ref": "race"}
    results = _post_together(app, plain, [body] * PARALLEL)

    codes = sorted(code for code, _ in results)
    assert codes == [200] * (PARALLEL - 1) + [201]
    assert len({str(payload) for _, payload in results}) == 1  # everyone got the same answer
    with app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 1
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Commission)) == 1


def test_concurrent_conflicting_bodies_make_one_conversion_and_409s(committed_world):
    app, plain = committed_world
    bodies = [
        {"transaction_id": "race-2", "amount": f"{10 + i}.00", "currency": "USD", "ref": "race"}
        for i in range(PARALLEL)
    ]
    results = _post_together(app, plain, bodies)
    codes = sorted(code for code, _ in results)
    assert codes == [201] + [409] * (PARALLEL - 1)
    with app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Conversion)) == 1


@pytest.fixture
def committed_books(database_url):
    """Partners with confirmed, unpaid commission lines, committed for real; removed afterwards."""
    from datetime import UTC, datetime

    from portal.models import PayoutAccount, PayoutBatch, PayoutItem, PayoutLine, Program
    from tests.factories import earn

    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        ProgramFactory(timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=1000)
        partners = [PartnerFactory(ref_code=f"settle{n}") for n in range(6)]
        for n, partner in enumerate(partners):
            _db.session.add(
                PayoutAccount(partner_id=partner.id, method="paypal", paypal_email=f"p{n}@example.org")
            )
            for _ in range(5):
                earn(partner, 700 + n, at=datetime(2026, 10, 1, tzinfo=UTC))
        _db.session.commit()
        user_ids = [p.user_id for p in partners]
    yield app
    with app.app_context():
        # Throw-away rows of the ledger: removed past its no-delete triggers.
        with without_ledger_triggers(_db.session.connection()):
            _delete_rollups()
            _db.session.execute(sa.delete(PayoutLine))
            _db.session.execute(sa.delete(PayoutItem))
            _db.session.execute(sa.delete(PayoutBatch))
            _db.session.execute(sa.delete(PayoutAccount))
            _db.session.execute(sa.delete(Commission))
            _db.session.execute(sa.delete(Conversion))
            _db.session.execute(sa.delete(Partner).where(Partner.user_id.in_(user_ids)))
            _db.session.execute(sa.delete(User).where(User.id.in_(user_ids)))
            _db.session.execute(sa.delete(Program))
            # What the settlements and payments audited: later tests count audit rows.
            _db.session.execute(sa.delete(AuditEvent))
        _db.session.commit()
        _db.engine.dispose()


def test_two_settlements_at_once_build_one_batch_and_pay_nobody_twice(committed_books):
    from datetime import date

    from portal.jobs import run_settlement
    from portal.models import PayoutBatch, PayoutItem, PayoutLine

    app = committed_books
    runs = 4
    barrier = threading.Barrier(runs)
    outcomes = []
    errors = []

    def worker():
        with app.app_context():
            barrier.wait(timeout=10)
            try:
                batch, created = run_settlement(date(2026, 11, 20))
                outcomes.append((batch.id, created))
            except Exception as exc:  # noqa: BLE001 - the test reports it below
                errors.append(exc)
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(created for _, created in outcomes) == [False] * (runs - 1) + [True]
    assert len({batch_id for batch_id, _ in outcomes}) == 1
    with app.app_context():
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 1
        items = _db.session.scalars(sa.select(PayoutItem)).all()
        assert len(items) == 6
        assert len({item.partner_id for item in items}) == 6
        # every line is in exactly one item, and every item is exactly its lines
        for item in items:
            total = _db.session.scalar(
                sa.select(sa.func.sum(Commission.amount_minor))
                .join(PayoutLine, PayoutLine.commission_id == Commission.id)
                .where(PayoutLine.payout_item_id == item.id)
            )
            assert total == item.amount_minor
        unpaid = _db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Commission)
            .where(~sa.exists().where(PayoutLine.commission_id == Commission.id))
        )
        assert unpaid == 0


def test_sales_crossing_a_tier_threshold_at_once_upgrade_the_partner_once(committed_world):
    from portal.models import MessageTemplate, OutboundEmail, PartnerTier, Tier, TierChange

    app, plain = committed_world
    with app.app_context():
        _db.session.add(
            Tier(
                name="Race tier",
                rank=1,
                rate_percent_bp=2000,
                threshold_metric="conversions",
                threshold_value=THRESHOLD,
            )
        )
        _db.session.commit()
    try:
        bodies = [
            {"transaction_id": f"race-tier-{i}", "amount": "10.00", "currency": "USD", "ref": "race"}
            for i in range(PARALLEL)
        ]
        # The key's first use of the minute writes its last_used_at: that row lock would
        # line the sales up by itself. Used once before, as under steady traffic.
        headers = {"Authorization": f"Bearer {plain}"}
        assert app.test_client().get("/api/v1/conversions/none", headers=headers).status_code == 404
        with app.app_context(), _slow_sale_inserts(_db.engine):
            results = _post_together(app, plain, bodies)
        assert sorted(code for code, _ in results) == [201] * PARALLEL, results
        with app.app_context():
            assert _db.session.scalar(sa.select(sa.func.count()).select_from(PartnerTier)) == 1
            assert _db.session.scalar(sa.select(sa.func.count()).select_from(TierChange)) == 1
            # Exactly as if they had come one after another (in the order they were stored):
            # the sales before the threshold earn the base rate, the one that reaches it and
            # every later one the tier's. (A partner's sales take turns: portal.database.lock_partner.)
            kinds = _db.session.scalars(
                sa.select(Commission.kind).join(Conversion).order_by(Conversion.id)
            ).all()
            assert kinds == ["base"] * (THRESHOLD - 1) + ["tier"] * (PARALLEL - THRESHOLD + 1)
    finally:
        with app.app_context():
            _db.session.execute(sa.delete(OutboundEmail))
            _db.session.execute(sa.delete(TierChange))
            _db.session.execute(sa.delete(PartnerTier))
            _db.session.execute(sa.delete(Tier))
            _db.session.execute(sa.delete(MessageTemplate))
            _db.session.commit()


@contextmanager
def _slow_sale_inserts(engine, seconds: float = 0.05):
    """Every sale's INSERT (which reads the partner's tier counters) waits a moment before
    its transaction goes on: parallel sales would all read the counters before any of the
    others committed, unless they take turns."""

    def pause(_conn, _cursor, statement, _parameters, _context, _executemany):
        if statement.lstrip().startswith("INSERT INTO conversions"):
            time.sleep(seconds)

    sa.event.listen(engine, "after_cursor_execute", pause)
    try:
        yield
    finally:
        sa.event.remove(engine, "after_cursor_execute", pause)


def _every_line_once(app) -> dict[int, int]:
    """Each line in exactly one item, each item exactly its lines; the paid-out total per partner."""
    from portal.models import PayoutItem, PayoutLine

    with app.app_context():
        lines = _db.session.scalar(sa.select(sa.func.count()).select_from(Commission))
        joined = _db.session.scalar(sa.select(sa.func.count()).select_from(PayoutLine))
        assert joined == lines == 30
        totals: dict[int, int] = {}
        for item in _db.session.scalars(sa.select(PayoutItem)).all():
            total = _db.session.scalar(
                sa.select(sa.func.sum(Commission.amount_minor))
                .join(PayoutLine, PayoutLine.commission_id == Commission.id)
                .where(PayoutLine.payout_item_id == item.id)
            )
            assert total == item.amount_minor
            totals[item.partner_id] = totals.get(item.partner_id, 0) + item.amount_minor
        return totals


def test_withdrawals_and_a_settlement_at_once_pay_each_line_once(committed_books):
    from datetime import UTC, date, datetime

    from portal.errors import DomainError
    from portal.jobs import run_settlement
    from portal.models import Program
    from portal.services import payouts

    app = committed_books
    with app.app_context():
        _db.session.execute(sa.update(Program).values(allow_withdrawals=True))
        _db.session.commit()
        partner_ids = list(_db.session.scalars(sa.select(Partner.id).order_by(Partner.id)))

    def withdraw(partner_id):
        def job():
            program = _db.session.scalars(sa.select(Program)).one()
            partner = _db.session.get(Partner, partner_id)
            return payouts.request_withdrawal(program, partner, datetime(2026, 11, 20, 9, tzinfo=UTC)).id

        return job

    jobs = [withdraw(pid) for pid in partner_ids[:3] * 2] + [
        lambda: run_settlement(date(2026, 11, 20))[0].id
    ] * 2
    _results, errors = writers_at_once(app, jobs)
    # A withdrawal that finds its lines already in a payout is refused in words; nothing else fails.
    assert all(isinstance(error, DomainError) for error in errors), errors
    totals = _every_line_once(app)
    # Each partner is paid exactly what they earned (5 lines of 700 + n), once.
    assert totals == {pid: 5 * (700 + n) for n, pid in enumerate(partner_ids)}


def test_paying_a_batch_from_several_places_at_once_pays_each_item_once(committed_books):
    from datetime import date

    from portal.jobs import run_settlement
    from portal.models import AuditEvent, ItemStatus, PayoutBatch, PayoutItem
    from portal.services import payouts

    app = committed_books
    with app.app_context():
        batch_id = run_settlement(date(2026, 11, 20))[0].id
        partner_user = _db.session.scalars(sa.select(User).order_by(User.id)).first()
        payouts.approve_batch(_db.session.get(PayoutBatch, batch_id), partner_user)
        _db.session.commit()
        actor_id = partner_user.id

    def pay(reference):
        def job():
            batch = _db.session.get(PayoutBatch, batch_id)
            # Paid on the day the batch was built (a date between the batch's and today).
            paid_on = batch.created_at.date()
            return payouts.mark_batch_paid(batch, _db.session.get(User, actor_id), reference, paid_on)

        return job

    results, errors = writers_at_once(app, [pay(f"BULK-{n}") for n in range(4)])
    with app.app_context():
        items = _db.session.scalars(sa.select(PayoutItem).where(PayoutItem.batch_id == batch_id)).all()
        assert [item.status for item in items] == [ItemStatus.PAID] * 6
        assert len({item.reference for item in items}) == 1  # one payment won; none paid twice
        assert sum(results) == 6  # the items marked paid, over every caller
        paid_events = _db.session.scalar(
            sa.select(sa.func.count()).where(AuditEvent.action == "payout.item_paid")
        )
        assert paid_events == 6
    assert all(not isinstance(error, AssertionError) for error in errors)
    _every_line_once(app)
