"""A sale refunded (or rejected) while a settlement is being built (PostgreSQL, two
connections): the negative line is a clawback when the sale ends up in the payout, a
reversal only when both are netted in the same batch. The money is netted either way; the
label is what the partner's timeline says."""

import threading
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import (
    AuditEvent,
    Commission,
    CommissionKind,
    Conversion,
    OutboxEvent,
    Partner,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Program,
    Refund,
    User,
)
from portal.models.stats import CreativeDailyStat, DailyStat, PartnerDailyStat, PartnerTrend, ProgramDailyStat
from portal.services import payouts, tracking
from portal.services.ledger import without_ledger_triggers
from tests.factories import PartnerFactory, ProgramFactory, UserFactory, earn

pytestmark = [pytest.mark.postgres_only, pytest.mark.money]


@pytest.fixture
def sale(database_url):
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        ProgramFactory(timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=1000)
        partner = PartnerFactory(ref_code="refundrace")
        _db.session.add(PayoutAccount(partner_id=partner.id, method="paypal", paypal_email="r@example.org"))
        line = earn(partner, 2500, at=datetime(2026, 10, 1, tzinfo=UTC))
        operator = UserFactory(email="refundrace-manager@example.org")
        _db.session.commit()
        ids = {
            "partner": partner.id,
            "user": partner.user_id,
            "operator": operator.id,
            "conversion": line.conversion_id,
            "line": line.id,
        }
    yield app, ids
    with app.app_context():
        with without_ledger_triggers(_db.session.connection()):
            for model in (PayoutLine, PayoutItem, PayoutBatch, PayoutAccount, Commission, Refund, Conversion):
                _db.session.execute(sa.delete(model))
            _db.session.execute(sa.delete(OutboxEvent))
            # What the refund or the rejection counted in the day rollups.
            for stats in (DailyStat, PartnerDailyStat, ProgramDailyStat, CreativeDailyStat, PartnerTrend):
                _db.session.execute(sa.delete(stats))
            _db.session.execute(sa.delete(AuditEvent))
            _db.session.execute(sa.delete(Partner).where(Partner.id == ids["partner"]))
            _db.session.execute(sa.delete(User).where(User.id.in_([ids["user"], ids["operator"]])))
            _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


def _refund(conversion, ids):
    tracking.refund_conversion(conversion, None, "refunded during settlement")


def _reject(conversion, ids):
    operator = _db.session.get(User, ids["operator"])
    tracking.reject_conversion(conversion, operator, "other", "rejected during settlement")


@pytest.mark.parametrize("take_back", [_refund, _reject], ids=["refund", "reject"])
def test_a_refund_during_settlement_is_a_clawback_when_the_sale_is_paid(sale, take_back):
    app, ids = sale
    built, refunded = threading.Event(), threading.Event()
    errors = []

    def settlement():
        with app.app_context():
            try:
                program = _db.session.scalars(sa.select(Program)).one()
                payouts.settle(program, date(2026, 11, 20))
                built.set()
                refunded.wait(timeout=3)  # the refund waits for this commit, or is done
                _db.session.commit()
            except Exception as exc:  # noqa: BLE001 - shown by the test
                _db.session.rollback()
                errors.append(exc)
                built.set()
            finally:
                _db.session.remove()

    def refund():
        with app.app_context():
            try:
                built.wait(timeout=10)
                conversion = _db.session.get(Conversion, ids["conversion"])
                take_back(conversion, ids)
                _db.session.commit()
            except Exception as exc:  # noqa: BLE001 - shown by the test
                _db.session.rollback()
                errors.append(exc)
            finally:
                refunded.set()
                _db.session.remove()

    threads = [threading.Thread(target=settlement), threading.Thread(target=refund)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with app.app_context():
        in_payout = dict(
            _db.session.execute(sa.select(PayoutLine.commission_id, PayoutLine.payout_item_id)).all()
        )
        negative = _db.session.scalars(sa.select(Commission).where(Commission.amount_minor < 0)).one()
        assert ids["line"] in in_payout
        if negative.id not in in_payout:  # netted later: the sale was paid, then taken back
            assert negative.kind == CommissionKind.CLAWBACK
        assert (
            payouts.confirmed_balance(ids["partner"])
            + sum(
                _db.session.scalar(sa.select(Commission.amount_minor).where(Commission.id == line_id))
                for line_id in in_payout
            )
            == 0
        )
