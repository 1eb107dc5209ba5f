"""Engine set-up that depends on the database in use."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm


def configure_engine_events(engine: sa.Engine) -> None:
    """SQLite: WAL, foreign keys, and real transactions (SAVEPOINT needs them)."""
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A request that will write takes the write lock up front: a deferred
        # transaction that read first can fail at once (SQLITE_BUSY) instead of
        # waiting its turn when another writer got in between.
        immediate = bool(connection.get_execution_options().get(WRITE_INTENT))
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        connection.info[WRITER] = immediate
        connection.info[CHANGES_AT_BEGIN] = connection.connection.dbapi_connection.total_changes


WRITE_INTENT = "portal_write_intent"
WRITER = "portal_writer"  # connection.info: this SQLite transaction began with the write lock
CHANGES_AT_BEGIN = "portal_changes_at_begin"  # connection.info: sqlite3's total_changes then


def begin_write(session) -> None:
    """Make the session's transaction a writer (matters on SQLite only), before its first write.

    No transaction yet: start one that takes SQLite's write lock (BEGIN IMMEDIATE). A
    transaction that has only read so far: end its read snapshot and take the write lock
    now, on the same connection, keeping the session's objects as they were read. (Writing
    from a read snapshot would fail at once with "database is locked" whenever another
    writer committed since it began, instead of waiting its turn.) So a request may read
    what it needs first and hold the lock only while it writes: the conversion API does.
    """
    if not session.in_transaction():
        session.connection(execution_options={WRITE_INTENT: True})
        return
    connection = session.connection()
    if connection.dialect.name != "sqlite" or connection.info.get(WRITER):
        return
    raw = connection.connection.dbapi_connection
    read_only_so_far = raw.total_changes == connection.info.get(CHANGES_AT_BEGIN)
    pending = session.new or session.dirty or session.deleted
    if not read_only_so_far or pending or session.in_nested_transaction():
        # It wrote already (so it holds the lock), or a savepoint or pending objects would
        # not survive the swap: go on as begun.
        return
    connection.exec_driver_sql("COMMIT")  # it only read: nothing to keep but what it loaded
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    connection.info[WRITER] = True
    connection.info[CHANGES_AT_BEGIN] = raw.total_changes


# pg_advisory_xact_lock(namespace, key): the namespace of a partner's earning lock.
_PARTNER_LOCKS = 0x50415254  # "PART"


def lock_partner(session, partner_id: int) -> None:
    """Hold ``partner_id``'s earning lock until the transaction ends (PostgreSQL: an advisory
    lock; SQLite: the write lock ``begin_write`` took already serializes every writer).

    A sale reads its partner's tier counters in its own INSERT; at READ COMMITTED two sales
    of one partner at once would both read the counters without the other, and the second
    would miss the tier the first reached. Taken first, the lock makes the second read after
    the first committed, exactly as if they had come one after the other."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(
            sa.text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
            {"namespace": _PARTNER_LOCKS, "key": partner_id},
        )


def stored_as_loaded(instance):
    """``instance``, whose every column holds what was just inserted, as a clean persistent
    object of the session, as if a query had loaded it."""
    from portal.extensions import db

    orm.make_transient_to_detached(instance)
    db.session.add(instance)
    return instance
