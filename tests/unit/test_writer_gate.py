"""SQLite's writers take turns at the writer gate (portal.database.WriterGate): a writer
waits for the one before it to end its transaction, is let in promptly, and every way a
transaction ends (commit, rollback, a connection returned or closed) hands the turn on."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from portal.database import WRITE_INTENT, begin_writing, configure_engine_events


def _engine(tmp_path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    configure_engine_events(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    return engine


def _writer(engine):
    return engine.execution_options(**{WRITE_INTENT: True}).begin()


def test_a_second_writer_waits_for_the_first_to_commit_then_goes_in_at_once(tmp_path):
    engine = _engine(tmp_path)
    order: list[str] = []
    entered = threading.Event()

    def second():
        with _writer(engine) as connection:
            order.append("second in")
            connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        entered.set()

    with _writer(engine) as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        assert not entered.is_set()  # waiting at the gate while the first holds it
        order.append("first commits")
    began = time.monotonic()
    thread.join(timeout=5)
    assert entered.is_set()
    assert time.monotonic() - began < 0.1  # polled every few ms, not SQLite's 100 ms sleeps
    assert order == ["first commits", "second in"]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
    engine.dispose()


def test_a_rollback_and_a_closed_connection_hand_the_turn_on(tmp_path):
    engine = _engine(tmp_path)
    connection = engine.connect()
    transaction = connection.execution_options(**{WRITE_INTENT: True}).begin()
    transaction.rollback()
    with _writer(engine) as other:  # would wait 5 s if the rollback had kept the turn
        other.exec_driver_sql("INSERT INTO t VALUES (1)")
    transaction = connection.execution_options(**{WRITE_INTENT: True}).begin()
    connection.close()  # returned to the pool mid-transaction: reset, turn handed on
    began = time.monotonic()
    with _writer(engine) as other:
        other.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert time.monotonic() - began < 1
    engine.dispose()


def test_a_batch_that_began_deferred_takes_its_turn_before_writing(tmp_path):
    engine = _engine(tmp_path)
    with engine.begin() as batch:
        begin_writing(batch)
        batch.exec_driver_sql("INSERT INTO t VALUES (1)")
        done = threading.Event()

        def other():
            with _writer(engine) as connection:
                connection.exec_driver_sql("INSERT INTO t VALUES (2)")
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.1)
        assert not done.is_set()
    thread.join(timeout=5)
    assert done.is_set()
    engine.dispose()


def test_a_writer_kept_waiting_past_the_busy_timeout_says_so_and_goes_on(tmp_path, monkeypatch, caplog):
    from portal import database

    engine = _engine(tmp_path)
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0.2)
    gate = database._GATES[engine]
    stranger: dict = {}
    gate.acquire(stranger)  # a turn taken and never given back (no transaction holds the lock)
    began = time.monotonic()
    with _writer(engine) as connection:  # goes on to SQLite, which has no writer: in at once
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert 0.2 <= time.monotonic() - began < 2
    assert "for the writer gate of" in caplog.text
    assert f"{tmp_path / 'gate.db'}-writer" in caplog.text
    gate.close(stranger)
    engine.dispose()
