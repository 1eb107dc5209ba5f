"""Per-process caches of what the hot paths read on every request, kept right across processes.

The click redirect and the tracking API read the same few rows again and again: a
link and its partner, the program's settings, an API key. Each app keeps them in a
``Lookups`` cache (``app.extensions["lookups"]``). One counter row, ``lookup_version``,
keeps every worker's copy honest:

* a transaction that changes a watched row (``WATCHED``: links, partners' codes and
  status, coupon codes, the program, creatives, API keys, the kinds of reward rule) adds one
  to the counter as its very last statement before COMMIT, so the counter's row lock is held
  for an instant and never while waiting for another lock;
* a process reads the counter at most every ``TRACKING_CACHE_CHECK_SECONDS`` (2 by
  default), and on its next look-up after committing such a change itself;
* an entry is only used while the counter is still the one it was loaded under.

So the process that made a change sees it on its next request, and every other
worker within ``TRACKING_CACHE_CHECK_SECONDS``. Entries also expire after
``TRACKING_CACHE_SECONDS`` (300 by default): a safety net for rows changed behind
the ORM's back (hand-written SQL), which the counter cannot see.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.extensions import db

log = logging.getLogger(__name__)
MISS = object()
_MAX_ENTRIES = 50_000
_CHANGED = CHANGED = "portal_lookups_changed"
_BUMPED = "portal_lookups_bumped"
_ROW_ID = 1

# Model name -> the attributes whose change matters (None: any column).
_WATCHED_NAMES: dict[str, frozenset[str] | None] = {
    "Link": None,
    "Partner": frozenset({"ref_code", "status"}),
    "Program": None,
    "Creative": None,
    "CreativeVersion": None,
    "Coupon": frozenset({"code", "status", "partner_id"}),
    "ApiKey": frozenset({"prefix", "key_hash", "revoked_at"}),
    # The rewards engine caches which kinds of rule exist (rewards.rules_in_use).
    "Tier": None,
    "ProductRate": None,
    "PrivateDeal": None,
    "Campaign": None,
}
_watched: dict[type, frozenset[str] | None] | None = None
_every: weakref.WeakSet[Lookups] = weakref.WeakSet()


def watched() -> dict[type, frozenset[str] | None]:
    global _watched
    if _watched is None:
        from portal import models

        _watched = {getattr(models, name): attrs for name, attrs in _WATCHED_NAMES.items()}
    return _watched


class Lookups:
    """Named tables of cached values, each entry tagged with the counter it was loaded under."""

    def __init__(self, ttl: float, check_every: float, max_entries: int = _MAX_ENTRIES):
        self.ttl = ttl
        self.check_every = check_every
        self.max_entries = max_entries
        self.version: int | None = None  # the counter as this process last read it
        self._checked_at = float("-inf")
        self._check_lock = threading.Lock()
        self._unreachable = False
        self._tables: dict[str, dict[Any, tuple[int | None, float, Any]]] = {}
        _every.add(self)

    # --- reading ---------------------------------------------------------------------

    def get(self, table: str, key: Any) -> Any:
        """The cached value, or ``MISS``."""
        if time.monotonic() - self._checked_at >= self.check_every:
            self._check()
        hit = self._tables.get(table, {}).get(key)
        if hit is not None and hit[0] == self.version and hit[1] > time.monotonic():
            return hit[2]
        return MISS

    def stale(self, table: str, key: Any) -> Any:
        """The value last cached, however old, or ``MISS``: what the click redirect uses
        while the database cannot be reached."""
        hit = self._tables.get(table, {}).get(key)
        return MISS if hit is None else hit[2]

    def load(self, table: str, key: Any, loader: Callable[[], Any]) -> Any:
        """The cached value, else ``loader()`` (run in the caller's session) cached."""
        value = self.get(table, key)
        if value is MISS:
            version = self._read_version()  # before the data: never newer than what it tags
            value = loader()
            if not db.session.info.get(_CHANGED):  # not while this transaction changes them itself
                self.put(table, key, value, version)
        return value

    def put(self, table: str, key: Any, value: Any, version: int | None) -> None:
        entries = self._tables.setdefault(table, {})
        if len(entries) >= self.max_entries:
            entries.clear()
        entries[key] = (version, time.monotonic() + self.ttl, value)

    # --- invalidation ------------------------------------------------------------------

    def forget(self, table: str | None = None, key: Any = None) -> None:
        """Drop entries in this process (tests; the counter does it for real changes)."""
        if table is None:
            self._tables = {}
        elif key is None:
            self._tables.pop(table, None)
        else:
            self._tables.get(table, {}).pop(key, None)

    def changed_here(self) -> None:
        """This process committed a change: read the counter on the next look-up."""
        self._checked_at = float("-inf")

    def _check(self) -> None:
        if not self._check_lock.acquire(blocking=False):
            return  # another thread is reading it; use what we have meanwhile
        try:
            self._checked_at = time.monotonic()
            self._read_version()
        except sa.exc.SQLAlchemyError as error:
            # The database cannot be reached: keep what we have (a look-up that misses will
            # fail on its own) and try again in check_every seconds.
            _rollback_quietly()
            if not self._unreachable:
                self._unreachable = True
                log.warning(
                    "cannot read the look-up counter (%s); using cached look-ups", type(error).__name__
                )
        else:
            if self._unreachable:
                self._unreachable = False
                log.warning("the look-up counter answers again")
        finally:
            self._check_lock.release()

    def _read_version(self) -> int | None:
        version = read_version(db.session)
        if version != self.version and (version is None or self.version is None or version > self.version):
            self.version = version
            self._tables = {}  # every entry is now stale: free them
        return version


def _rollback_quietly() -> None:
    # The connection may be gone; the session is dropped at the end of the request anyway.
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        db.session.rollback()


def read_version(session) -> int | None:
    return session.execute(
        sa.text("SELECT version FROM lookup_version WHERE id = :id"), {"id": _ROW_ID}
    ).scalar()


def bump_version(session) -> None:
    result = session.execute(
        sa.text("UPDATE lookup_version SET version = version + 1 WHERE id = :id"), {"id": _ROW_ID}
    )
    if result.rowcount == 0:  # a database made without the migrations' first row
        session.execute(sa.text("INSERT INTO lookup_version (id, version) VALUES (:id, 1)"), {"id": _ROW_ID})


def lookups() -> Lookups:
    return current_app.extensions["lookups"]


def forget_everywhere(table: str | None = None, key: Any = None) -> None:
    """Drop entries in every app of this process (tests make many apps)."""
    for cache in list(_every):
        cache.forget(table, key)


def init_app(app: Flask) -> Lookups:
    cache = Lookups(app.config["TRACKING_CACHE_SECONDS"], app.config["TRACKING_CACHE_CHECK_SECONDS"])
    app.extensions["lookups"] = cache
    return cache


# --- noticing changes ----------------------------------------------------------------------


def touches_watched(session: Session) -> bool:
    """Whether the session holds unflushed changes to watched rows."""
    rules = watched()
    for obj in (*session.new, *session.deleted):
        if type(obj) in rules:
            return True
    for obj in session.dirty:
        attrs = rules.get(type(obj), MISS)
        if attrs is MISS:
            continue
        if attrs is None:
            if session.is_modified(obj):
                return True
            continue
        state = sa.inspect(obj)
        if any(state.attrs[name].history.has_changes() for name in attrs):
            return True
    return False


@event.listens_for(Session, "before_flush")
def _note_changes(session: Session, _flush_context, _instances) -> None:
    if not session.info.get(_CHANGED) and touches_watched(session):
        session.info[_CHANGED] = True


@event.listens_for(Session, "before_commit")
def _bump_before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT's release (or a commit with one still open: see _after_commit)
    session.flush()  # what is still pending may be a watched change
    if session.info.get(_CHANGED):
        bump_version(session)
        session.info[_BUMPED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    if not session.info.pop(_CHANGED, False):
        return
    if not session.info.pop(_BUMPED, False):
        # Committed with a SAVEPOINT still open, so before_commit could not tell it was the
        # real commit: count the change in a transaction of its own, right after.
        with session.get_bind().begin() as connection:
            bump_version(connection)
    if has_app_context():
        cache = current_app.extensions.get("lookups")
        if cache is not None:
            cache.changed_here()


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_CHANGED, None)
        session.info.pop(_BUMPED, None)
