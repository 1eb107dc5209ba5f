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
        immediate = connection.get_execution_options().get(WRITE_INTENT)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


WRITE_INTENT = "portal_write_intent"


def begin_write(session) -> None:
    """Start the session's transaction as a writer (matters on SQLite only); call it first."""
    if not session.in_transaction():
        session.connection(execution_options={WRITE_INTENT: True})


def stored_as_loaded(instance):
    """``instance``, whose every column holds what was just inserted, as a clean persistent
    object of the session, as if a query had loaded it."""
    from portal.extensions import db

    orm.make_transient_to_detached(instance)
    db.session.add(instance)
    return instance
