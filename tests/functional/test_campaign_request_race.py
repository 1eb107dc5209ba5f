"""Several operators answering one custom campaign request at once: exactly one wins.

Runs against committed data on a real database (SQLite and PostgreSQL), each
operator on its own thread and connection, released together by a barrier.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.database import begin_write
from portal.errors import InvalidTransition
from portal.extensions import db as _db
from portal.models import (
    AuditEvent,
    Campaign,
    CampaignRequest,
    Link,
    Partner,
    Program,
    RequestStatus,
    Role,
    Tag,
    User,
)
from portal.services import campaign_requests
from portal.services.partners import set_partner_tags
from tests.factories import PartnerFactory, ProgramFactory, UserFactory

pytestmark = pytest.mark.postgres

PARALLEL = 4


@pytest.fixture
def committed_request(database_url):
    """A top partner's waiting request and several managers, committed for real; removed afterwards."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        program = ProgramFactory()
        managers = [UserFactory(role=Role.MANAGER) for _ in range(PARALLEL)]
        partner = PartnerFactory(ref_code="racer")
        set_partner_tags(partner, managers[0], [program.top_partner_tag])
        request = campaign_requests.submit_request(
            partner,
            program,
            campaign_requests.RequestInput("Race", "https://shop.example/race", 1500, 10),
        )
        _db.session.commit()
        ids = {"request": request.id, "managers": [m.id for m in managers], "partner": partner.id}
        user_ids = [*ids["managers"], partner.user_id]
    yield app, ids
    with app.app_context():
        campaign_ids = _db.session.scalars(sa.select(Campaign.id)).all()
        _db.session.execute(sa.delete(Link).where(Link.campaign_id.in_(campaign_ids)))
        _db.session.execute(sa.delete(CampaignRequest))
        _db.session.execute(sa.delete(Campaign))
        _db.session.execute(sa.delete(AuditEvent).where(AuditEvent.actor_id.in_(user_ids)))
        _db.session.execute(sa.delete(Partner).where(Partner.id == ids["partner"]))
        _db.session.execute(sa.delete(User).where(User.id.in_(user_ids)))
        _db.session.execute(sa.delete(Tag))
        _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


def _race(app, ids, step) -> list[str]:
    barrier = threading.Barrier(PARALLEL)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(manager_id: int):
        with app.app_context():
            barrier.wait(timeout=10)
            try:
                begin_write(_db.session())
                found = _db.session.get(CampaignRequest, ids["request"])
                manager = _db.session.get(User, manager_id)
                step(found, manager, _db.session.scalars(sa.select(Program)).one())
                _db.session.commit()
                outcome = "won"
            except InvalidTransition:
                _db.session.rollback()
                outcome = "refused"
            finally:
                _db.session.remove()
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(m,)) for m in ids["managers"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(outcomes)


def test_operators_approving_at_once_make_one_campaign(committed_request):
    app, ids = committed_request
    outcomes = _race(app, ids, lambda r, m, p: campaign_requests.approve_request(r, m, p))
    assert outcomes == ["refused"] * (PARALLEL - 1) + ["won"]
    with app.app_context():
        found = _db.session.get(CampaignRequest, ids["request"])
        assert found.status == RequestStatus.APPROVED
        assert _db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 1
        assert _db.session.scalar(sa.select(sa.func.count()).where(Link.campaign_id.is_not(None))) == 1
        approvals = _db.session.scalar(
            sa.select(sa.func.count()).where(AuditEvent.action == "campaign_request.approved")
        )
        assert approvals == 1


def test_counter_offers_at_once_leave_one_offer(committed_request):
    app, ids = committed_request
    rates = iter(range(1100, 1100 + PARALLEL))
    outcomes = _race(app, ids, lambda r, m, p: campaign_requests.counter_offer(r, m, p, next(rates), None))
    assert outcomes == ["refused"] * (PARALLEL - 1) + ["won"]
    with app.app_context():
        found = _db.session.get(CampaignRequest, ids["request"])
        assert found.status == RequestStatus.COUNTERED
        offer = _db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "campaign_request.countered")
        ).one()
        # the offer on the request is the one the winner made, and its author is the winner
        assert (found.counter_percent_bp, found.decided_by_id) == (
            offer.data["rate_percent_bp"],
            offer.actor_id,
        )
