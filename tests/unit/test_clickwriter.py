"""The batched click writer: nothing is lost, on a timer, on a full batch, or at shutdown."""

import os
import threading
from datetime import UTC
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from config import TestingConfig
from portal import clickwriter, create_app, realtime
from portal.clickwriter import ClickWriter
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
        "partner_id": app.config["TEST_PARTNER_ID"] if app else 1,
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


# --- the spool: every answered click is on disk until the database has it ---------------


def broken_database(app, monkeypatch):
    with app.app_context():
        engine = db.engine

    def broken_begin(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))

    monkeypatch.setattr(engine, "begin", broken_begin)


def fresh_writer(app) -> ClickWriter:
    """Another process's writer on the same database and spool (as after a restart)."""
    return ClickWriter(app)


def test_close_while_the_database_is_down_keeps_every_click_for_the_next_process(buffered_app, monkeypatch):
    writer = buffered_app.extensions["click_writer"]
    broken_database(buffered_app, monkeypatch)
    for n in range(1234):
        writer.record(row(buffered_app, n))
    writer.close()  # SIGTERM during the outage
    assert stored(buffered_app) == 0
    assert spooled_lines(buffered_app) == 1234
    monkeypatch.undo()
    assert fresh_writer(buffered_app).replay() == 1234
    assert stored(buffered_app) == 1234
    assert spooled_lines(buffered_app) == 0
    assert _stats(buffered_app) == {buffered_app.config["TEST_PARTNER_ID"]: (1234, 1234, 0)}


def test_a_replay_run_twice_stores_and_counts_each_click_once(buffered_app, monkeypatch):
    writer = buffered_app.extensions["click_writer"]
    broken_database(buffered_app, monkeypatch)
    for n in range(120):
        writer.record(row(buffered_app, n))
    writer.close()
    monkeypatch.undo()
    spool = Path(buffered_app.config["CLICK_SPOOL_DIR"])
    copies = {path: path.read_bytes() for path in spool.glob("*.clicks")}
    assert fresh_writer(buffered_app).replay() == 120
    for path, content in copies.items():  # as if a second replayer had read them too
        path.write_bytes(content)
    assert fresh_writer(buffered_app).replay() == 120
    assert stored(buffered_app) == 120
    assert _stats(buffered_app) == {buffered_app.config["TEST_PARTNER_ID"]: (120, 120, 0)}


def test_a_killed_writer_leaves_its_clicks_for_the_next_process(buffered_app):
    writer = buffered_app.extensions["click_writer"]
    for n in range(37):  # fewer than a batch: nothing wakes the writer
        writer.record(row(buffered_app, n))
    # SIGKILL: no flush, no close; the kernel drops the segment's lock with the process.
    os.close(writer._segment.fd)
    writer._segment = None
    writer._rows = []
    assert fresh_writer(buffered_app).replay() == 37
    assert stored(buffered_app) == 37


def test_a_live_writer_s_segment_is_never_replayed_by_another(buffered_app):
    writer = buffered_app.extensions["click_writer"]
    for n in range(5):
        writer.record(row(buffered_app, n))
    assert fresh_writer(buffered_app).replay() == 0
    assert stored(buffered_app) == 0
    writer.record(row(buffered_app, 5))  # still appending to the same segment
    assert writer.flush() == 6
    assert stored(buffered_app) == 6
    assert spooled_lines(buffered_app) == 0
    writer.close()


def test_a_torn_last_line_is_skipped_and_the_rest_replayed(buffered_app, monkeypatch, caplog):
    writer = buffered_app.extensions["click_writer"]
    broken_database(buffered_app, monkeypatch)
    for n in range(3):
        writer.record(row(buffered_app, n))
    writer.close()
    monkeypatch.undo()
    (segment,) = Path(buffered_app.config["CLICK_SPOOL_DIR"]).glob("*.clicks")
    with segment.open("ab") as file:
        file.write(b'["torn')
    assert fresh_writer(buffered_app).replay() == 3
    assert stored(buffered_app) == 3
    assert "skipped unreadable line 4" in caplog.text


def test_when_the_spool_cannot_be_written_clicks_wait_in_memory(buffered_app, tmp_path, caplog):
    not_a_directory = tmp_path / "full"
    not_a_directory.write_text("")
    buffered_app.config["CLICK_SPOOL_DIR"] = str(not_a_directory)
    writer = ClickWriter(buffered_app)
    for n in range(4):
        writer.record(row(buffered_app, n))
    assert writer.unspooled == 4
    assert writer.refused == 0
    assert "clicks kept in memory only" in caplog.text
    assert writer.flush() == 4
    assert stored(buffered_app) == 4
    writer.close()


def test_memory_full_and_spool_full_refuses_the_newest_and_counts_them(buffered_app, tmp_path, monkeypatch):
    monkeypatch.setattr(clickwriter, "MEMORY_LIMIT", 3)
    not_a_directory = tmp_path / "full"
    not_a_directory.write_text("")
    buffered_app.config["CLICK_SPOOL_DIR"] = str(not_a_directory)
    writer = ClickWriter(buffered_app)
    for n in range(5):
        writer.record(row(buffered_app, n))
    assert (writer.pending, writer.refused) == (3, 2)
    assert writer.flush() == 3
    with buffered_app.app_context():
        ids = set(db.session.scalars(sa.select(Click.id)))
    assert ids == {row(buffered_app, n)["id"] for n in range(3)}  # the oldest kept
    writer.close()


def test_clicks_beyond_memory_are_written_from_the_spool(buffered_app, monkeypatch):
    monkeypatch.setattr(clickwriter, "MEMORY_LIMIT", 10)
    writer = buffered_app.extensions["click_writer"]
    for n in range(25):
        writer.record(row(buffered_app, n))
    assert writer.pending == 10
    assert writer.flush() == 25  # the segment is replayed whole from disk
    assert stored(buffered_app) == 25
    assert spooled_lines(buffered_app) == 0
    writer.close()


def test_a_click_already_stored_is_skipped_not_a_failed_batch(buffered_app):
    writer = buffered_app.extensions["click_writer"]
    writer.record(row(buffered_app, 1))
    assert writer.flush() == 1
    writer.record(row(buffered_app, 1))  # e.g. written by the API from its signed id meanwhile
    writer.record(row(buffered_app, 2))
    assert writer.flush() == 2
    assert stored(buffered_app) == 2
    assert _stats(buffered_app) == {buffered_app.config["TEST_PARTNER_ID"]: (2, 2, 0)}
    writer.close()


_text = st.none() | st.text(max_size=40)


@given(
    partner_id=st.integers(1, 2**31 - 1),
    link_id=st.none() | st.integers(1, 2**31 - 1),
    campaign=_text,
    user_agent=_text,
    is_bot=st.booleans(),
    created_at=st.datetimes(timezones=st.just(UTC)),
)
def test_a_spool_line_reads_back_as_the_row(partner_id, link_id, campaign, user_agent, is_bot, created_at):
    original = {
        **row(None, 7),
        "partner_id": partner_id,
        "link_id": link_id,
        "campaign": campaign,
        "user_agent": user_agent,
        "is_bot": is_bot,
        "created_at": created_at,
    }
    line = clickwriter.encode_row(original)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert clickwriter.decode_row(line) == original
