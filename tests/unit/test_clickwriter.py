"""The batched click writer: nothing is lost, on a timer, on a full batch, or at shutdown."""

import threading

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app
from portal.extensions import db
from portal.models import Click
from portal.models.types import utcnow
from tests.conftest import migrate_database
from tests.factories import PartnerFactory


@pytest.fixture
def buffered_app(tmp_path):
    url = f"sqlite:///{tmp_path}/clicks.db"
    migrate_database(url)
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=url,
        CLICK_WRITE_MODE="buffered",
        CLICK_FLUSH_SECONDS=60,  # the tests decide when to flush
        CLICK_BATCH_SIZE=50,
    )
    with app.app_context():
        partner = PartnerFactory()
        db.session.commit()
        app.config["TEST_PARTNER_ID"] = partner.id
    yield app
    with app.app_context():
        db.engine.dispose()


def row(app, n: int) -> dict:
    return {
        "id": f"{n:032x}",
        "partner_id": app.config["TEST_PARTNER_ID"],
        "link_id": None,
        "code": "x",
        "channel": "other",
        "campaign": None,
        "sub_id": None,
        "creative_id": None,
        "destination_url": "https://shop.example/",
        "ip_hash": "0" * 32,
        "user_agent": None,
        "referrer": None,
        "is_bot": False,
        "is_unique": True,
        "flagged": None,
        "created_at": utcnow(),
    }


def stored(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(Click))


def test_clicks_wait_in_memory_until_flushed(buffered_app):
    writer = buffered_app.extensions["click_writer"]
    for n in range(10):
        writer.record(row(buffered_app, n))
    assert writer.pending == 10
    assert stored(buffered_app) == 0
    assert writer.flush() == 10
    assert stored(buffered_app) == 10
    writer.close()


def test_a_full_batch_wakes_the_writer(buffered_app):
    writer = buffered_app.extensions["click_writer"]
    done = threading.Event()
    original = writer.flush

    def flush_and_tell():
        written = original()
        if written:
            done.set()
        return written

    writer.flush = flush_and_tell
    for n in range(50):
        writer.record(row(buffered_app, n))
    assert done.wait(timeout=5)
    assert stored(buffered_app) == 50
    writer.close()


def test_close_writes_everything_from_many_threads(buffered_app):
    writer = buffered_app.extensions["click_writer"]

    def produce(start):
        for n in range(start, start + 200):
            writer.record(row(buffered_app, n))

    threads = [threading.Thread(target=produce, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert stored(buffered_app) == 800
    assert writer.pending == 0


def test_a_failed_write_keeps_the_clicks_for_the_next_attempt(buffered_app, monkeypatch):
    writer = buffered_app.extensions["click_writer"]
    writer.record(row(buffered_app, 1))
    with buffered_app.app_context():
        engine = db.engine
    real_begin = engine.begin

    def broken_begin(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(engine, "begin", broken_begin)
    assert writer.flush() == 0
    assert writer.pending == 1
    monkeypatch.setattr(engine, "begin", real_begin)
    assert writer.flush() == 1
    writer.close()
    assert stored(buffered_app) == 1
