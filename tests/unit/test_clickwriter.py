"""The batched click writer: nothing is lost, on a timer, on a full batch, or at shutdown."""

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import TestingConfig
from portal import create_app, realtime
from portal.extensions import db
from portal.models import Click, PartnerDailyStat
from portal.models.types import utcnow
from portal.services import rollups
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
        CLICK_SPOOL_DIR=str(tmp_path / "spool"),
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


def spooled_lines(app) -> int:
    """Clicks in the spool's segments (the live writer's current one included)."""
    return sum(
        len(path.read_bytes().splitlines()) for path in Path(app.config["CLICK_SPOOL_DIR"]).glob("*.clicks")
    )


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
    assert writer.pending == 0  # not in memory: in the spool, on disk
    assert spooled_lines(buffered_app) == 1
    assert writer.flush() == 0  # still down: the replay fails too, and keeps the segment
    assert spooled_lines(buffered_app) == 1
    monkeypatch.setattr(engine, "begin", real_begin)
    assert writer.flush() == 1
    writer.close()
    assert stored(buffered_app) == 1
    assert spooled_lines(buffered_app) == 0


def _stats(app) -> dict[int, tuple[int, int, int]]:
    with app.app_context():
        rows = db.session.scalars(sa.select(PartnerDailyStat))
        return {r.partner_id: (r.clicks, r.unique_clicks, r.bot_clicks) for r in rows}


def test_a_flush_counts_the_batch_and_tells_each_partner_once(buffered_app, monkeypatch):
    writer = buffered_app.extensions["click_writer"]
    first = buffered_app.config["TEST_PARTNER_ID"]
    with buffered_app.app_context():
        second = PartnerFactory().id
        db.session.commit()
    emitted = []
    monkeypatch.setattr(
        realtime.socketio, "emit", lambda name, payload, to: emitted.append((name, to, payload))
    )
    for n in range(6):
        writer.record({**row(buffered_app, n), "is_bot": n == 0, "is_unique": n % 2 == 1})
    for n in range(6, 9):
        writer.record({**row(buffered_app, n), "partner_id": second})
    assert _stats(buffered_app) == {}  # nothing counted before the clicks are written
    assert writer.flush() == 9
    assert _stats(buffered_app) == {first: (5, 3, 1), second: (3, 3, 0)}
    # One emit to all the batch's partners' rooms (one publish over Redis), one to the operators.
    assert emitted == [
        ("stats", sorted([f"partner:{first}", f"partner:{second}"]), {}),
        ("stats", "operators", {"clicks": 9}),
    ]
    writer.close()


def test_clicks_and_their_counts_are_written_together_or_not_at_all(buffered_app, monkeypatch):
    writer = buffered_app.extensions["click_writer"]
    writer.record(row(buffered_app, 1))

    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(rollups, "count_clicks", broken)
    assert writer.flush() == 0
    assert stored(buffered_app) == 0  # the insert was rolled back with the failed count
    monkeypatch.undo()
    assert writer.flush() == 1
    assert stored(buffered_app) == 1
    assert _stats(buffered_app) == {buffered_app.config["TEST_PARTNER_ID"]: (1, 1, 0)}
    writer.close()
