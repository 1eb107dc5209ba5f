"""One payment recorded from two places at once (two operators, a double-submitted form).

Against committed data on a real database (SQLite and PostgreSQL), each request on its own
thread and connection, released together. The item is loaded before the transaction takes
its turn as a writer, as the console's views load it (``admin/payouts.py``).
"""

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.errors import DomainError
from portal.extensions import db as _db
from portal.models import (
    AuditEvent,
    Commission,
    Conversion,
    ItemStatus,
    OutboxEvent,
    Partner,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Program,
    Role,
    User,
)
from portal.services import payouts
from portal.services.ledger import without_ledger_triggers
from tests.factories import PartnerFactory, ProgramFactory, UserFactory, earn
from tests.races import writers_at_once

# Money tests: `make test` runs them again with the clock pinned (marker ``money``).
pytestmark = [pytest.mark.postgres, pytest.mark.money]

PARALLEL = 4


@pytest.fixture
def approved_item(database_url):
    """One partner's item in an approved batch, committed for real; removed afterwards."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        ProgramFactory(timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=1000)
        partner = PartnerFactory(ref_code="payrace")
        manager = UserFactory(role=Role.MANAGER)
        _db.session.add(
            PayoutAccount(partner_id=partner.id, method="paypal", paypal_email="race@example.org")
        )
        for _ in range(3):
            earn(partner, 2500, at=datetime(2026, 10, 1, tzinfo=UTC))
        _db.session.flush()
        program = _db.session.scalars(sa.select(Program)).one()
        batch, _created = payouts.settle(program, date(2026, 11, 20))
        payouts.approve_batch(batch, manager)
        _db.session.commit()
        ids = {
            "batch": batch.id,
            "item": batch.items[0].id,
            "partner": partner.id,
            "users": [partner.user_id, manager.id],
            "manager": manager.id,
        }
    yield app, ids
    with app.app_context():
        with without_ledger_triggers(_db.session.connection()):
            _db.session.execute(sa.delete(PayoutLine))
            _db.session.execute(sa.delete(PayoutItem))
            _db.session.execute(sa.delete(PayoutBatch))
            _db.session.execute(sa.delete(PayoutAccount))
            _db.session.execute(sa.delete(Commission))
            _db.session.execute(sa.delete(Conversion))
            _db.session.execute(sa.delete(OutboxEvent))
            _db.session.execute(sa.delete(Partner).where(Partner.id == ids["partner"]))
            _db.session.execute(sa.delete(User).where(User.id.in_(ids["users"])))
            _db.session.execute(sa.delete(Program))
            _db.session.execute(sa.delete(AuditEvent))
        _db.session.commit()
        _db.engine.dispose()


class _Job:
    def __init__(self, ids, action, text):
        self.ids, self.action, self.text = ids, action, text

    def load(self):
        item = _db.session.get(PayoutItem, self.ids["item"])
        item.batch  # noqa: B018 - loaded with the item, as the batch page's view has it
        return item

    def __call__(self, item):
        manager = _db.session.get(User, self.ids["manager"])
        if self.action == "failed":
            return payouts.mark_item_failed(item, manager, self.text).status
        return payouts.mark_item_paid(item, manager, self.text, item.batch.created_at.date()).status


def _outcome(app, ids):
    with app.app_context():
        item = _db.session.get(PayoutItem, ids["item"])
        lines = _db.session.scalar(
            sa.select(sa.func.count()).select_from(PayoutLine).where(PayoutLine.payout_item_id == item.id)
        )
        recorded = _db.session.scalars(
            sa.select(AuditEvent.action).where(
                AuditEvent.subject_type == "payout_item",
                AuditEvent.subject_id == item.id,
                AuditEvent.action.in_(["payout.item_paid", "payout.item_failed"]),
            )
        ).all()
        announced = _db.session.scalars(
            sa.select(OutboxEvent.type).where(OutboxEvent.type.in_(["payout.paid", "payout.failed"]))
        ).all()
        return (
            item.status,
            item.reference,
            lines,
            sorted(recorded),
            sorted(announced),
            payouts.confirmed_balance(ids["partner"]),
        )


def test_paid_and_failed_at_once_record_one_outcome(approved_item):
    """A payment marked paid must never then become failed (its lines back in the balance,
    so the next batch pays them a second time), nor both be announced."""
    app, ids = approved_item
    jobs = [_Job(ids, "paid", "PP-1")] + [_Job(ids, "failed", "bounced")] * (PARALLEL - 1)
    _results, errors = writers_at_once(app, jobs, load=_Job.load)
    assert all(isinstance(error, DomainError) for error in errors), errors
    status, _reference, lines, recorded, announced, balance = _outcome(app, ids)
    if status == ItemStatus.PAID:
        assert (lines, recorded, announced, balance) == (3, ["payout.item_paid"], ["payout.paid"], 0)
    else:
        assert status == ItemStatus.FAILED
        assert (lines, recorded, announced, balance) == (0, ["payout.item_failed"], ["payout.failed"], 7500)


def test_a_payment_submitted_twice_at_once_is_recorded_once(approved_item):
    app, ids = approved_item
    _results, errors = writers_at_once(
        app, [_Job(ids, "paid", f"PP-{n}") for n in range(PARALLEL)], load=_Job.load
    )
    assert len(errors) == PARALLEL - 1 and all(isinstance(error, DomainError) for error in errors), errors
    status, reference, lines, recorded, announced, balance = _outcome(app, ids)
    assert (status, lines, recorded, announced, balance) == (
        ItemStatus.PAID,
        3,
        ["payout.item_paid"],
        ["payout.paid"],
        0,
    )
    assert reference.startswith("PP-")
