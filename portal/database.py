"""Engine set-up that depends on the database in use."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

BUSY_TIMEOUT_SECONDS = 5.0

log = logging.getLogger(__name__)

_M = TypeVar("_M")


class WriterGate:
    """SQLite has one writer; this hands the turn from one to the next promptly.

    Left to SQLite, a writer that finds the lock taken sleeps in its busy handler for
    1, 2, 5 … up to 100 ms before it looks again, so under load the lock often stands free
    while every waiter sleeps (throughput collapses and the slowest requests wait most of
    a second). Here a writer first takes an exclusive ``flock`` on a file beside the
    database, polled every 0.2–2 ms, and only then ``BEGIN IMMEDIATE``; it lets go when its
    transaction ends. Every process and thread writing through this engine queues here;
    a writer that waits longer than SQLite's own busy timeout goes on to SQLite's handler.
    One descriptor per connection: ``flock`` excludes other descriptors, threads included.
    """

    HELD = "portal_writer_gate_held"
    FD = "portal_writer_gate_fd"

    def __init__(self, database_path: str) -> None:
        self.path = database_path + "-writer"

    def acquire(self, info: dict) -> None:
        if info.get(self.HELD):
            return
        fd = info.get(self.FD)
        if fd is None:
            fd = info[self.FD] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    # Another writer held the turn all along (a long transaction, or one left
                    # open): said, since every writer of the database waits behind it.
                    log.warning(
                        "waited %.1f s for the writer gate of %s; SQLite's busy timeout decides now",
                        BUSY_TIMEOUT_SECONDS,
                        self.path,
                    )
                    return  # SQLite's busy timeout decides from here
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
                continue
            info[self.HELD] = True
            return

    def release(self, info: dict) -> None:
        if info.pop(self.HELD, False):
            fcntl.flock(info[self.FD], fcntl.LOCK_UN)

    def close(self, info: dict) -> None:
        self.release(info)
        fd = info.pop(self.FD, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


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
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    file_database = engine.url.database not in (None, "", ":memory:")
    gate = WriterGate(engine.url.database) if file_database else None
    if gate is not None:
        _GATES[engine] = gate

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A request that will write takes the write lock up front: a deferred
        # transaction that read first can fail at once (SQLITE_BUSY) instead of
        # waiting its turn when another writer got in between.
        immediate = bool(connection.get_execution_options().get(WRITE_INTENT))
        if immediate and gate is not None:
            gate.acquire(connection.info)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        connection.info[WRITER] = immediate
        connection.info[CHANGES_AT_BEGIN] = connection.connection.dbapi_connection.total_changes

    if gate is None:
        return

    # The turn ends with the transaction (or with the connection, whatever ends it). The
    # commit event comes before SQLAlchemy's COMMIT, so the next writer is let in while the
    # COMMIT writes the WAL (and any checkpoint after it): its BEGIN IMMEDIATE may meet the
    # lock still taken for an instant, but its turn overlaps that I/O. Opening the gate after
    # the COMMIT instead was measured slower: two processes writing 60 indexed rows a
    # transaction, 125 transactions a second against 200 (the same for small transactions).
    @sa.event.listens_for(engine, "commit")
    @sa.event.listens_for(engine, "rollback")
    def _on_end(connection):
        gate.release(connection.info)

    # Each with its event's own signature (SQLAlchemy inspects it: a catch-all *args made
    # "reset" warn of its pre-2.0 form on every return to the pool).
    @sa.event.listens_for(engine, "reset")
    def _on_reset(_dbapi_connection, record, _reset_state):
        gate.release(record.info)

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        gate.release(record.info)

    @sa.event.listens_for(engine, "close")
    @sa.event.listens_for(engine, "invalidate")
    def _on_close(_dbapi_connection, record, *_exception):
        gate.close(record.info)


WRITE_INTENT = "portal_write_intent"
_GATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> its SQLite file's gate
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
    if session.new or session.dirty or session.deleted or session.in_nested_transaction():
        return  # pending objects or a savepoint would not survive the swap: go on as begun
    begin_writing(session.connection())


def begin_writing(connection: sa.Connection) -> None:
    """``begin_write`` for a Connection in a transaction (the click writer's batches): on
    SQLite, a transaction that has written nothing yet ends its read snapshot and takes its
    turn at the writer gate and the write lock; one that wrote already holds them."""
    if connection.dialect.name != "sqlite" or connection.info.get(WRITER):
        return
    if connection.in_nested_transaction():
        return  # a savepoint (or a session joined to an outer transaction) would not survive
    raw = connection.connection.dbapi_connection
    if raw.total_changes != connection.info.get(CHANGES_AT_BEGIN):
        return  # it wrote already, so it holds the lock
    connection.exec_driver_sql("COMMIT")  # it only read: nothing to keep but what it loaded
    gate = _GATES.get(connection.engine)
    if gate is not None:
        gate.acquire(connection.info)
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    connection.info[WRITER] = True
    connection.info[CHANGES_AT_BEGIN] = raw.total_changes


# pg_advisory_xact_lock(namespace, key): the namespace of a partner's earning lock.
_PARTNER_LOCKS = 0x50415254  # "PART"
# Like the sale path's other Core statements (not ORM ones), the locks go straight to the
# session's connection: ``Session.execute`` would only find that connection again, at ~30 us
# a statement.
_LOCK_ONE = sa.text("SELECT pg_advisory_xact_lock(:namespace, :key)")
# OFFSET 0 keeps the ordered subquery as it is: the locks are taken in its order.
_LOCK_MANY = sa.text(
    "SELECT pg_advisory_xact_lock(:namespace, key) FROM "
    "(SELECT key FROM unnest(CAST(:keys AS integer[])) AS key ORDER BY key OFFSET 0) AS ordered"
)


def lock_partner(session, partner_id: int) -> None:
    """Hold ``partner_id``'s earning lock until the transaction ends (PostgreSQL: an advisory
    lock; SQLite: the write lock ``begin_write`` took already serializes every writer).

    A sale reads its partner's tier counters in its own INSERT; at READ COMMITTED two sales
    of one partner at once would both read the counters without the other, and the second
    would miss the tier the first reached. Taken first, the lock makes the second read after
    the first committed, exactly as if they had come one after the other."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.connection().execute(_LOCK_ONE, {"namespace": _PARTNER_LOCKS, "key": partner_id})


def lock_partners(session, partner_ids) -> None:
    """``lock_partner`` for several partners in one statement, in ascending order: two
    transactions that each lock a set of partners this way never wait for each other in a
    circle (a batch of sales from ``portal.salewriter`` locks its partners before it writes)."""
    keys = sorted(set(partner_ids))
    if not keys or session.get_bind().dialect.name != "postgresql":
        return
    if len(keys) == 1:
        lock_partner(session, keys[0])
        return
    session.connection().execute(_LOCK_MANY, {"namespace": _PARTNER_LOCKS, "keys": keys})


def stored_as_loaded(model: type[_M], **values) -> _M:
    """A ``model`` whose columns hold ``values``, just inserted, as a clean persistent object
    of the session, as if a query had loaded it (a column left out is loaded when first
    read). Built without the constructor's attribute events: the hot paths make thousands."""
    from portal.extensions import db

    instance = orm.class_mapper(model).class_manager.new_instance()
    instance.__dict__.update(values)
    orm.make_transient_to_detached(instance)
    # What ``Session.add`` does for a detached object, less its save-update cascade: a
    # new instance refers to no other object, so the cascade (a walk over every one of the
    # model's relationships, a fifth of this function) would find nothing.
    db.session()._update_impl(orm.attributes.instance_state(instance))
    return instance


def dialect_insert(dialect: str, table) -> sa.Insert:
    """``INSERT`` into ``table`` in ``dialect``'s own form (``"postgresql"`` or ``"sqlite"``),
    which has ``on_conflict_do_nothing`` / ``on_conflict_do_update`` and ``excluded``."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# From how many rows an INSERT takes its rows as one JSON document (``insert_from_json``)
# rather than as a multi-row VALUES list. psycopg caches its parse of a statement only under
# 4,096 bytes and 50 parameters (a sale has 28 columns, a commission line 14), so a VALUES
# list of two sales or more is parsed anew on every call, and is new text for every row count;
# the JSON form's text never changes. Measured on PostgreSQL 15 with psycopg 3 (README,
# *Rows as one JSON document*): from two rows it costs the sale writer less, and PostgreSQL
# no more.
JSON_FROM_ROWS = 2


def insert_from_json_sql(table: sa.Table, columns: Sequence[str], tail: str = "", param: str = "rows") -> str:
    """PostgreSQL: the SQL of an INSERT of many rows that arrive as one JSON array of objects
    (bound as ``:<param>``, ``json_rows``), typed as ``table``'s columns, in the order given.
    ``tail``: ON CONFLICT … / RETURNING …"""
    dialect = postgresql.dialect()
    fields = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    names = ", ".join(columns)
    source = (
        f"ROWS FROM (json_to_recordset(CAST(:{param} AS json)) AS ({fields})) "
        f"WITH ORDINALITY AS rows({names}, position)"
    )
    # Our table's and columns' names only; the rows are a bound parameter.
    select = f"SELECT {names} FROM {source} ORDER BY position"  # noqa: S608
    return f"INSERT INTO {table.name} ({names}) {select} {tail}"


def insert_from_json(table: sa.Table, columns: Sequence[str], tail: str = "") -> sa.TextClause:
    """PostgreSQL: an INSERT of many rows that arrive as one JSON document (``json_rows``),
    rows in the order given. Its text is the same for one row or a thousand, so the driver
    parses it once and the server prepares it once; and the whole batch is one parameter,
    encoded by ``json.dumps`` in C, where an array per column costs the driver a Python loop
    over every value (README, benchmarks). ``tail``: ON CONFLICT … / RETURNING …"""
    return sa.text(insert_from_json_sql(table, columns, tail))


def _json_value(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):  # and datetimes: ISO 8601, with their offset
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"no JSON form for {type(value).__name__}")


def json_rows(rows: Sequence[Mapping]) -> str:
    """``rows`` as the JSON document ``insert_from_json`` reads (datetimes in ISO 8601, enums
    as their values; a JSON column's value as it is, nested)."""
    return json.dumps(rows, default=_json_value, separators=(",", ":"), ensure_ascii=False)


class OrderedInsert:
    """An INSERT of many rows of ``table`` (each with exactly ``columns``) in one statement,
    whose new ids come back in the order the rows were given.

    - SQLite: one multi-row INSERT hands out rowids in the order of its VALUES (the write
      lock is held throughout), so the returned ids, sorted, are the rows'. (SQLAlchemy's
      ``sort_by_parameter_order`` runs one row per statement there.)
    - PostgreSQL, from ``JSON_FROM_ROWS`` rows: the rows as one JSON document
      (``insert_from_json``), inserted in the order given, so the sequence hands out their
      ids in that order: the returned ids, sorted, are the rows'. (SQLAlchemy's
      ``sort_by_parameter_order`` relies on the same for a SERIAL key.)
    - PostgreSQL, one row: a plain INSERT … RETURNING id."""

    def __init__(self, table: sa.Table, columns: Sequence[str]):
        self.table, self.columns = table, tuple(columns)
        self._one = sa.insert(table).returning(table.c.id)
        self._from_json: sa.TextClause | None = None  # built on first use

    def ids(self, session, rows: list[dict]) -> list[int]:
        if not rows:
            return []
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            return sorted(connection.execute(self._one, rows).scalars().all())
        if len(rows) < JSON_FROM_ROWS:
            return list(connection.execute(self._one, rows).scalars().all())
        if self._from_json is None:
            self._from_json = insert_from_json(self.table, self.columns, "RETURNING id")
        return sorted(connection.execute(self._from_json, {"rows": json_rows(rows)}).scalars())
