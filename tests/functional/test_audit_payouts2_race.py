"""A batch moved from two places at once: approved twice (a double-submitted form, two
operators), approved while a held payment is released, paid in bulk twice, or its last two
payments recorded by two operators together.

Against committed data on a real database (SQLite and PostgreSQL), each request on its own
thread and connection, released together. The batch and item are loaded before the
transaction takes its turn as a writer, as the console's views load them (``admin/payouts.py``).
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
    BatchStatus,
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
from portal.services.audit import record_event
from portal.services.ledger import without_ledger_triggers
from tests.factories import PartnerFactory, ProgramFactory, UserFactory, earn
from tests.races import writers_at_once

# Money tests: `make test` runs them again with the clock pinned (marker ``money``).
pytestmark = [pytest.mark.postgres, pytest.mark.money]

PARALLEL = 4


def _build(database_url, partners: int, approve: bool, details_changed: bool = False):
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        ProgramFactory(timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=1000)
        manager = UserFactory(role=Role.MANAGER)
        ids = {"partners": [], "users": [manager.id], "manager": manager.id}
        for n in range(partners):
            partner = PartnerFactory(ref_code=f"batchrace{n}")
            _db.session.add(
                PayoutAccount(partner_id=partner.id, method="paypal", paypal_email=f"race{n}@example.org")
            )
            for _ in range(2):
                earn(partner, 2500, at=datetime(2026, 10, 1, tzinfo=UTC))
            if details_changed:
                # Replaced payout details just now: the batch holds the item for a check.
                record_event(manager, payouts.DESTINATION_CHANGED, "partner", partner.id, method="paypal")
            ids["partners"].append(partner.id)
            ids["users"].append(partner.user_id)
        _db.session.flush()
        program = _db.session.scalars(sa.select(Program)).one()
        batch, _created = payouts.settle(program, date(2026, 11, 20))
        if approve:
            payouts.approve_batch(batch, manager)
        _db.session.commit()
        ids["batch"] = batch.id
        ids["items"] = [item.id for item in sorted(batch.items, key=lambda item: item.id)]
    return app, ids


def _remove(app, ids):
    with app.app_context():
        with without_ledger_triggers(_db.session.connection()):
            for model in (PayoutLine, PayoutItem, PayoutBatch, PayoutAccount, Commission, Conversion):
                _db.session.execute(sa.delete(model))
            _db.session.execute(sa.delete(OutboxEvent))
            _db.session.execute(sa.delete(Partner).where(Partner.id.in_(ids["partners"])))
            _db.session.execute(sa.delete(AuditEvent))
            _db.session.execute(sa.delete(User).where(User.id.in_(ids["users"])))
            _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


@pytest.fixture
def batch_in_review(database_url):
    app, ids = _build(database_url, partners=1, approve=False)
    yield app, ids
    _remove(app, ids)


@pytest.fixture
def held_batch_in_review(database_url):
    app, ids = _build(database_url, partners=1, approve=False, details_changed=True)
    yield app, ids
    _remove(app, ids)


@pytest.fixture
def approved_batch(database_url):
    app, ids = _build(database_url, partners=2, approve=True)
    yield app, ids
    _remove(app, ids)


class _Job:
    def __init__(self, ids, action, item_index=0):
        self.ids, self.action, self.item_index = ids, action, item_index

    def load(self):
        batch = _db.session.get(PayoutBatch, self.ids["batch"])
        item = _db.session.get(PayoutItem, self.ids["items"][self.item_index])
        item.batch  # noqa: B018 - loaded with the item, as the batch page's view has it
        return batch, item

    def __call__(self, loaded):
        batch, item = loaded
        manager = _db.session.get(User, self.ids["manager"])
        program = _db.session.scalars(sa.select(Program)).one()
        if self.action == "approve":
            return payouts.approve_batch(batch, manager).status
        if self.action == "release":
            return payouts.release_details_hold(item, manager, program).status
        if self.action == "batch_paid":
            return payouts.mark_batch_paid(batch, manager, "BULK-1", batch.created_at.date())
        return payouts.mark_item_paid(item, manager, f"PP-{item.id}", batch.created_at.date()).status


def _audit(app, action):
    with app.app_context():
        return list(
            _db.session.execute(
                sa.select(AuditEvent.subject_id, AuditEvent.data).where(AuditEvent.action == action)
            )
        )


def test_a_batch_approved_twice_at_once_is_approved_once(batch_in_review):
    app, ids = batch_in_review
    _results, errors = writers_at_once(app, [_Job(ids, "approve") for _ in range(PARALLEL)], load=_Job.load)
    assert len(errors) == PARALLEL - 1 and all(isinstance(error, DomainError) for error in errors), errors
    assert len(_audit(app, "payout.batch_approved")) == 1
    with app.app_context():
        assert _db.session.get(PayoutBatch, ids["batch"]).status == BatchStatus.APPROVED


def test_a_release_racing_the_approval_adds_nothing_to_what_was_approved(held_batch_in_review):
    """Released first: the approval sees and records the payment. Approved first: the release
    is refused (nothing is added to an approved batch). Never a payment added behind the
    approval's back."""
    app, ids = held_batch_in_review
    _results, errors = writers_at_once(app, [_Job(ids, "approve"), _Job(ids, "release")], load=_Job.load)
    assert all(isinstance(error, DomainError) for error in errors), errors
    with app.app_context():
        batch = _db.session.get(PayoutBatch, ids["batch"])
        item = _db.session.get(PayoutItem, ids["items"][0])
        lines = _db.session.scalar(
            sa.select(sa.func.count()).select_from(PayoutLine).where(PayoutLine.payout_item_id == item.id)
        )
        approved = _audit(app, "payout.batch_approved")
        assert len(approved) == 1
        if item.status == ItemStatus.PENDING:
            assert (batch.status, lines, approved[0][1]["total_minor"]) == (BatchStatus.APPROVED, 2, 5000)
        else:
            # Nothing in it to pay: approving it closed it.
            assert (item.status, lines, approved[0][1]["total_minor"]) == (ItemStatus.HELD, 0, 0)
            assert batch.status == BatchStatus.CLOSED
            assert payouts.confirmed_balance(ids["partners"][0]) == 5000


def test_a_batch_paid_in_bulk_twice_at_once_is_refused_in_words(approved_batch):
    app, ids = approved_batch
    _results, errors = writers_at_once(
        app, [_Job(ids, "batch_paid") for _ in range(PARALLEL)], load=_Job.load
    )
    assert len(errors) == PARALLEL - 1 and all(isinstance(error, DomainError) for error in errors), errors
    assert len(_audit(app, "payout.item_paid")) == 2
    with app.app_context():
        assert _db.session.get(PayoutBatch, ids["batch"]).status == BatchStatus.CLOSED


def test_the_last_two_payments_recorded_at_once_close_the_batch(approved_batch):
    """Each sees the other's payment still waiting unless they take turns: then nobody closes
    the batch, and it shows as overdue for ever."""
    app, ids = approved_batch
    _results, errors = writers_at_once(app, [_Job(ids, "paid", 0), _Job(ids, "paid", 1)], load=_Job.load)
    assert not errors, errors
    with app.app_context():
        batch = _db.session.get(PayoutBatch, ids["batch"])
        assert batch.status == BatchStatus.CLOSED
