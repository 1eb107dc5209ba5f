"""Refunds of one sale sent at once add up exactly and count once per refund_id.

Runs against committed data on a real database (SQLite and PostgreSQL), each request on
its own thread and connection, released together by a barrier (as test_concurrency.py).
On SQLite the API's write transaction begins IMMEDIATE and waits for the lock (busy
timeout), so the requests take turns; on PostgreSQL the conversion's row lock orders them.
"""

import threading

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import ApiKey, AuditEvent, Commission, Conversion, Partner, Program, Refund, User
from portal.services.api_keys import create_api_key
from tests.factories import PartnerFactory, ProgramFactory

pytestmark = pytest.mark.postgres

PARALLEL = 20
SALE = {"transaction_id": "refund-race", "amount": "100.00", "currency": "USD", "ref": "refunds"}


@pytest.fixture
def committed_sale(database_url):
    """A program, a partner, a key and one $100.00 sale earning $12.00, committed for real."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        ProgramFactory(commission_percent_bp=1200)
        partner = PartnerFactory(ref_code="refunds")
        _key, plain = create_api_key("refunds", None)
        _db.session.commit()
        ids = {"partner": partner.id, "user": partner.user_id}
    created = app.test_client().post(
        "/api/v1/conversions", json=SALE, headers={"Authorization": f"Bearer {plain}"}
    )
    assert created.status_code == 201, created.json
    assert created.json["conversion"]["commission"]["amount"] == "12.00"
    yield app, plain
    with app.app_context():
        from portal.services.rollups import GRAINS

        for grain in GRAINS:
            _db.session.execute(sa.delete(grain.table))
        _db.session.execute(sa.delete(Refund))
        _db.session.execute(sa.delete(Commission).where(Commission.reverses_id.is_not(None)))
        _db.session.execute(sa.delete(Commission))
        _db.session.execute(sa.delete(Conversion))
        _db.session.execute(sa.delete(AuditEvent))
        _db.session.execute(sa.delete(ApiKey))
        _db.session.execute(sa.delete(Partner).where(Partner.id == ids["partner"]))
        _db.session.execute(sa.delete(User).where(User.id == ids["user"]))
        _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


def _refund_together(app, plain, bodies):
    barrier = threading.Barrier(len(bodies))
    results = [None] * len(bodies)

    def worker(index, body):
        client = app.test_client()
        barrier.wait(timeout=10)
        response = client.post(
            f"/api/v1/conversions/{SALE['transaction_id']}/refund",
            json=body,
            headers={"Authorization": f"Bearer {plain}"},
        )
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=worker, args=(i, b)) for i, b in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _books(app):
    """(refunded, the net commission, each earning line's reversals, the refunds' rows)."""
    with app.app_context():
        conversion = _db.session.scalars(sa.select(Conversion)).one()
        lines = conversion.commissions
        reversals = sorted(-line.amount_minor for line in lines if line.reverses_id is not None)
        refunds = sorted((r.refund_id or "", r.amount_minor) for r in _db.session.scalars(sa.select(Refund)))
        books = (conversion.refunded_minor, sum(line.amount_minor for line in lines), reversals, refunds)
        _db.session.remove()
        return books, conversion.status


def test_parallel_full_refunds_reverse_the_commission_exactly_once(committed_sale):
    app, plain = committed_sale
    results = _refund_together(app, plain, [{}] * PARALLEL)
    assert [code for code, _ in results] == [200] * PARALLEL, results
    assert {payload["conversion"]["refunded_amount"] for _, payload in results} == {"100.00"}
    assert {payload["conversion"]["commission"]["amount"] for _, payload in results} == {"0.00"}
    (refunded, net, reversals, refunds), status = _books(app)
    assert (refunded, net, reversals, refunds) == (10_000, 0, [1200], [("", 10_000)])
    assert status == "rejected"


def test_parallel_partial_refunds_with_distinct_ids_add_up_exactly(committed_sale):
    app, plain = committed_sale
    # 1.00, 1.01, …, 1.19: 21.90 in all, each reversal rounded half-even on the running total
    amounts = [100 + n for n in range(PARALLEL)]
    bodies = [{"amount": f"{a / 100:.2f}", "refund_id": f"part-{n}"} for n, a in enumerate(amounts)]
    results = _refund_together(app, plain, bodies)
    assert [code for code, _ in results] == [200] * PARALLEL, results
    (refunded, net, reversals, refunds), status = _books(app)
    assert refunded == sum(amounts) == 2_190
    # 12 % of what is left (78.10): 9.372 → 9.37, whatever order the refunds took
    assert net == 937
    assert sum(reversals) == 263 == 1200 - 937
    assert refunds == sorted((f"part-{n}", a) for n, a in enumerate(amounts))
    assert status == "pending"
    # every answer was the state right after its own refund: all different, the last is the total
    seen = sorted(payload["conversion"]["refunded_amount"] for _, payload in results)
    assert len(set(seen)) == PARALLEL
    assert max(seen, key=lambda text: int(text.replace(".", ""))) == "21.90"


def test_the_same_refund_id_sent_at_once_counts_once(committed_sale):
    app, plain = committed_sale
    results = _refund_together(app, plain, [{"amount": "25.00", "refund_id": "once"}] * PARALLEL)
    assert [code for code, _ in results] == [200] * PARALLEL, results
    assert len({str(payload) for _, payload in results}) == 1  # everyone got the first answer
    (refunded, net, reversals, refunds), _status = _books(app)
    assert (refunded, net, reversals, refunds) == (2_500, 900, [300], [("once", 2_500)])


def test_the_same_refund_id_with_different_bodies_at_once_is_one_refund_and_409s(committed_sale):
    app, plain = committed_sale
    bodies = [{"amount": f"{n + 1}.00", "refund_id": "mixed"} for n in range(PARALLEL)]
    results = _refund_together(app, plain, bodies)
    codes = sorted(code for code, _ in results)
    assert codes == [200] + [409] * (PARALLEL - 1), results
    (winner,) = [body for body, (code, _) in zip(bodies, results, strict=True) if code == 200]
    (refunded, _net, _reversals, refunds), _status = _books(app)
    minor = int(winner["amount"].removesuffix(".00")) * 100
    assert (refunded, refunds) == (minor, [("mixed", minor)])
