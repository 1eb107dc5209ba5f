"""The batched click writer: nothing is lost, on a timer, on a full batch, or at shutdown.

The writer commits for real, on its own connections: each test gets a database of its own
(on PostgreSQL a copy of a migrated template, so that every test starts empty)."""

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from config import TestingConfig
from portal import clickwriter, create_app, realtime
from portal.clickwriter import ClickWriter
from portal.extensions import db
from portal.models import Click, Link, PartnerDailyStat
from portal.models.types import utcnow
from portal.services import clicks, rollups
from tests.conftest import POSTGRES_URL, _create_postgres_database, _reset_postgres, migrate_database
from tests.factories import PartnerFactory

pytestmark = pytest.mark.postgres


def _server_url(database: str) -> sa.URL:
    return sa.engine.make_url(POSTGRES_URL).set(database=database)


@pytest.fixture(scope="session")
def writer_template(database_backend) -> str | None:
    """PostgreSQL: a migrated database the tests' own databases are copied from."""
    if database_backend != "postgresql":
        return None
    name = f"{sa.engine.make_url(POSTGRES_URL).database}_writer_template"
    url = _server_url(name).render_as_string(hide_password=False)
    _create_postgres_database(url)
    _reset_postgres(url)
    migrate_database(url)
    return name


def _admin(sql: str) -> None:
    engine = sa.create_engine(_server_url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(sql)
    engine.dispose()


@pytest.fixture
def writer_database(database_backend, writer_template, tmp_path):
    if database_backend != "postgresql":
        url = f"sqlite:///{tmp_path}/clicks.db"
        migrate_database(url)
        yield url
        return
    name = f"{writer_template.removesuffix('_template')}_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{writer_template}"')
    yield _server_url(name).render_as_string(hide_password=False)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def buffered_app(writer_database, tmp_path):
    app = create_app(
        TestingConfig,
        SQLALCHEMY_DATABASE_URI=writer_database,
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


def wait_for_the_first_replay(writer: ClickWriter) -> None:
    """Until the writer's thread has made the replay it makes as it starts."""
    deadline = time.monotonic() + 10
    while writer._scanned_at == float("-inf") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer._scanned_at != float("-inf"), "the writer's thread never replayed the spool"
    with writer._flush_lock:
        pass


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
    # Written by this flush, or already by the writer thread's replay of the spool when it
    # started (the first click starts it; on a busy machine that can come after the failure):
    # either way once, with its count.
    writer.flush()
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
    # The writer's thread replays the spool once as it starts; on a busy machine that can come
    # after the "kill" below and take the segment itself. Let it finish first.
    wait_for_the_first_replay(writer)
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


# --- a batch as PostgreSQL's COPY takes it (SQLite: the same rows, one INSERT) -------------

# Values a COPY stream must escape, or that a driver might mangle: tabs, newlines, backslashes
# (and "\\N", COPY's NULL), quotes, control characters (not NUL: PostgreSQL's text cannot hold
# it), and scripts beyond Latin, emoji included.
_AWKWARD = ("tab\there", "new\nline\r\n", "back\\slash \\N", "\\N", "quote\"s'", "\x7f\x01", "")
_UNICODE_SUBS = ("été", "推广-01", "наш_канал", "👍+1", "a.b:c-d")


def _link(app, code: str) -> int:
    with app.app_context():
        link = Link(partner_id=app.config["TEST_PARTNER_ID"], code=code, label=code, channel="social")
        db.session.add(link)
        db.session.commit()
        return link.id


def awkward_rows(app, count: int) -> list[dict]:
    link_id = _link(app, "awkward")
    base = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night Berlin's clocks go forward
    rows = []
    for n in range(count):
        text = _AWKWARD[n % len(_AWKWARD)]
        rows.append(
            {
                **row(app, 10_000 + n),
                "link_id": link_id if n % 3 else None,
                "code": "awkward" if n % 3 else "ref-code",
                "channel": ("social", "email", "other")[n % 3],
                "campaign": None if n % 2 else f"spring {text}"[:64],
                "sub_id": _UNICODE_SUBS[n % len(_UNICODE_SUBS)] if n % 4 else None,
                "creative_id": n if n % 5 == 0 else None,
                "destination_url": f"https://shop.example/p?q={text}&n={n}"[:2000],
                "ip_hash": f"{n:032x}",
                # As long as the column takes: a long browser string with every awkward value.
                "user_agent": None if n % 7 == 0 else (f"Mozilla/5.0 ({text}) 🦊 " * 40)[:512],
                "referrer": None if n % 2 else f"https://blog.example/{text}",
                "is_bot": n % 6 == 0,
                "is_unique": n % 6 != 0 and n % 4 != 1,
                "flagged": "click_flood" if n % 11 == 0 else None,
                "created_at": base + timedelta(minutes=n, microseconds=n),
            }
        )
    return rows


def stored_rows(app) -> dict[str, dict]:
    with app.app_context():
        found = db.session.execute(sa.select(*(Click.__table__.c[name] for name in clickwriter.COLUMNS)))
        return {r.id: {**r._asdict(), "created_at": r.created_at.astimezone(UTC)} for r in found}


@pytest.fixture
def copies(buffered_app, monkeypatch) -> list[tuple[int, bool]]:
    """Each COPY of a batch (PostgreSQL): its size, and whether the database took it whole."""
    made = []
    real = clicks._copy_clicks

    def copy(connection, rows):
        took = real(connection, rows)
        made.append((len(rows), took))
        return took

    monkeypatch.setattr(clicks, "_copy_clicks", copy)
    return made


def on_postgres(app) -> bool:
    return app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")


def test_every_click_of_a_flush_is_stored_as_it_was_answered(buffered_app, copies):
    buffered_app.config["CLICK_BATCH_SIZE"] = 10_000  # one batch
    writer = ClickWriter(buffered_app)
    rows = awkward_rows(buffered_app, 1200)
    for click in rows:
        writer.record(click)
    assert writer.flush() == 1200
    assert stored_rows(buffered_app) == {click["id"]: click for click in rows}
    assert spooled_lines(buffered_app) == 0
    humans = [click for click in rows if not click["is_bot"]]
    expected = (len(humans), sum(click["is_unique"] for click in humans), len(rows) - len(humans))
    assert _stats(buffered_app) == {buffered_app.config["TEST_PARTNER_ID"]: expected}
    assert copies == ([(1200, True)] if on_postgres(buffered_app) else [])
    writer.close()


def test_a_batch_with_a_click_stored_already_stores_the_rest_once(buffered_app, copies):
    writer = buffered_app.extensions["click_writer"]
    rows = awkward_rows(buffered_app, 40)
    for click in rows[:5]:
        writer.record(click)
    assert writer.flush() == 5
    for click in rows:  # the first five again (a replayed spool, or the API's late rows)
        writer.record(click)
    assert writer.flush() == 40
    # PostgreSQL: the COPY is refused whole (a duplicate id), the INSERT skips the five.
    assert copies == ([(5, True), (40, False)] if on_postgres(buffered_app) else [])
    assert stored_rows(buffered_app) == {click["id"]: click for click in rows}
    with buffered_app.app_context():
        assert sum(r.clicks + r.bot_clicks for r in db.session.scalars(sa.select(PartnerDailyStat))) == 40
    writer.close()


def test_a_click_on_a_link_deleted_meanwhile_is_dropped_and_the_rest_stored(buffered_app, copies, caplog):
    writer = buffered_app.extensions["click_writer"]
    rows = awkward_rows(buffered_app, 30)
    gone = {**rows[7], "link_id": 2**31 - 1}  # no such link: the database refuses the row
    for click in [*rows[:7], gone, *rows[8:]]:
        writer.record(click)
    assert writer.flush() == 30
    assert set(stored_rows(buffered_app)) == {click["id"] for click in rows} - {gone["id"]}
    assert f"click {gone['id']} refused by the database, dropped" in caplog.text
    assert copies == ([(30, False)] if on_postgres(buffered_app) else [])
    assert spooled_lines(buffered_app) == 0
    writer.close()


def test_a_failed_batch_write_keeps_the_spool_until_a_later_one_stores_it(buffered_app, monkeypatch):
    buffered_app.config["CLICK_BATCH_SIZE"] = 10_000  # no flush but the test's own
    writer = ClickWriter(buffered_app)
    rows = awkward_rows(buffered_app, 120)
    # Refused by the database in the middle of the writer's transaction.
    if on_postgres(buffered_app):
        monkeypatch.setattr(clicks, "_COPY_CLICKS", "COPY clicks (no_such_column) FROM STDIN")
    else:
        monkeypatch.setattr(
            clicks, "_INSERT_CLICKS", clicks._INSERT_CLICKS.replace("clicks", "no_such_table", 1)
        )
    for click in rows:
        writer.record(click)
    # The thread's start-up replay, if it came after the failure below, would store the kept
    # segment itself and leave the test's own flush nothing to replay.
    wait_for_the_first_replay(writer)
    assert writer.flush() == 0
    assert writer.pending == 0
    assert spooled_lines(buffered_app) == 120  # kept on disk, fsync'd, for the replay
    assert stored_rows(buffered_app) == {}
    monkeypatch.undo()
    assert writer.flush() == 120  # the replay after the next flush
    assert stored_rows(buffered_app) == {click["id"]: click for click in rows}
    assert spooled_lines(buffered_app) == 0
    writer.close()


_AS_STORED = sa.text(
    "SELECT CAST(created_at AS TEXT), CAST(is_bot AS TEXT), CAST(is_unique AS TEXT), "
    "COALESCE(campaign, '<null>'), COALESCE(sub_id, '<null>'), COALESCE(user_agent, '<null>'), "
    "COALESCE(referrer, '<null>'), COALESCE(CAST(link_id AS TEXT), '<null>') FROM clicks WHERE id = :id"
)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7])
def test_a_batch_is_stored_as_one_click_at_a_time_would_be(buffered_app, n):
    """The batch paths (COPY, SQLite's executemany) store the very values, as the database
    holds them, that the one-row INSERT does: times, NULLs, booleans."""
    rows = awkward_rows(buffered_app, 10)
    alone = {**rows[n], "id": "stored-alone"}
    with buffered_app.app_context(), db.engine.begin() as connection:
        clicks.store_clicks(connection, rows)
        clicks.store_clicks(connection, [alone])
        in_batch = connection.execute(_AS_STORED, {"id": rows[n]["id"]}).one()
        one_row = connection.execute(_AS_STORED, {"id": "stored-alone"}).one()
    assert in_batch == one_row


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
