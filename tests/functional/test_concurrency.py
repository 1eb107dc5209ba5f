"""The same sale reported several times at once: exactly one conversion, one commission.

Runs against committed data on a real database (SQLite and PostgreSQL), each
request on its own thread and connection, released together by a barrier.
"""

import threading

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.extensions import db as _db
from portal.models import ApiKey, Commission, Conversion, Partner, User
from portal.services.api_keys import create_api_key
from tests.factories import PartnerFactory, ProgramFactory

pytestmark = pytest.mark.postgres

PARALLEL = 8


@pytest.fixture
def committed_world(database_url):
    """A program, a partner and a key, committed for real; removed afterwards."""
    app = create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        ProgramFactory()
        partner = PartnerFactory(ref_code="race")
        _key, plain = create_api_key("race", None)
        _db.session.commit()
        ids = {"partner": partner.id, "user": partner.user_id}
    yield app, plain
    with app.app_context():
        _db.session.execute(sa.delete(Commission))
        _db.session.execute(sa.delete(Conversion))
        _db.session.execute(sa.delete(ApiKey))
        _db.session.execute(sa.delete(Partner).where(Partner.id == ids["partner"]))
        _db.session.execute(sa.delete(User).where(User.id == ids["user"]))
        from portal.models import Program

        _db.session.execute(sa.delete(Program))
        _db.session.commit()
        _db.engine.dispose()


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
