"""Writes clicks in batches off the request thread, and keeps every answered click on disk
until the database has it.

``record()`` appends the click to an in-memory list and, before the redirect answers, one
line to this process's current *spool segment* (an append-only file in ``CLICK_SPOOL_DIR``,
held under an exclusive ``flock``). A background thread, every ``CLICK_FLUSH_SECONDS`` (or
sooner when a batch fills), starts a new segment, inserts the batch gathered with the old
one (insert-or-ignore by click id, counted in the dashboard rollups in the same
transaction), deletes the old segment, and tells each partner in the batch once ("stats")
and the operators once.

When the insert fails (the database is down), the old segment is fsync'd and left in the
directory: the *spool*. Any process replays unlocked segments, at start-up and after each
successful write, in their original order, with their original click ids and times; a
click already stored is skipped, so a replay that runs twice (or beside another) counts
each click once. A process killed outright (SIGKILL) leaves its segment unlocked with every
click it answered (each line was written before the answer); the next process to start
replays it. So only losing the disk (or the machine before the kernel wrote its page
cache: at most the last ``CLICK_FLUSH_SECONDS`` of clicks not yet in the database) loses
answered clicks. When the disk is full a click is kept in memory only; when memory is
full as well (a long outage on a full disk) the newest clicks are refused, counted and
warned about.

``close()`` (registered with ``atexit`` and gunicorn's ``worker_exit`` hook) writes what is
left, or leaves it in the spool. ``CLICK_WRITE_MODE=inline`` writes in the request's own
transaction instead (tests, and anyone who prefers it).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from portal import osthreads, realtime
from portal.database import begin_writing
from portal.extensions import db
from portal.services.clicks import CLICK_COLUMNS, store_clicks

log = logging.getLogger(__name__)

COLUMNS = CLICK_COLUMNS  # a spool line lists them in this order
SUFFIX = ".clicks"
# Clicks held in memory while the writer cannot keep up (a frozen database): beyond this
# they are only in the spool segment, which is then replayed from disk.
MEMORY_LIMIT = 100_000
# How often a process looks for segments that other (dead) processes left behind.
SCAN_SECONDS = 10.0
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode_row(row: dict) -> bytes:
    """A click row as one spool line."""
    values = [row[name] for name in COLUMNS]
    values[-1] = values[-1].isoformat()
    return (_encoder.encode(values) + "\n").encode()


def decode_row(line: bytes) -> dict:
    """A spool line back as the click row (ValueError when it is not one)."""
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(COLUMNS):
        raise ValueError("not a click row")
    row = dict(zip(COLUMNS, values, strict=True))
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


class Segment:
    """One append-only spool file, locked by this process while it is open."""

    def __init__(self, directory: Path):
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}{SUFFIX}"
        self.path = directory / name
        # Locked under another name first: a replayer must never find it unlocked.
        creating = directory / f".{name}.new"
        self.fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.rename(creating, self.path)
        self.size = 0
        self.lines = 0

    def append(self, line: bytes) -> None:
        written = os.write(self.fd, line)
        if written != len(line):  # the disk filled up mid-line: leave no half line behind
            os.ftruncate(self.fd, self.size)
            raise OSError(errno.ENOSPC, "short write to the click spool")
        self.size += written
        self.lines += 1

    def keep(self) -> None:
        """Make it durable and let any process replay it."""
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)

    def discard(self) -> None:
        """Its clicks are in the database."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def _unavailable(error: Exception) -> bool:
    """Whether a failed write means "the database cannot be reached" rather than "these rows
    are wrong"."""
    return not isinstance(error, sa.exc.IntegrityError | sa.exc.DataError)


class ClickWriter:
    def __init__(self, app: Flask):
        self.app = app
        self.inline = app.config["CLICK_WRITE_MODE"] == "inline"
        self.interval = app.config["CLICK_FLUSH_SECONDS"]
        self.max_batch = app.config["CLICK_BATCH_SIZE"]
        self.spool_dir = Path(app.config["CLICK_SPOOL_DIR"])
        self.refused = 0  # answered clicks neither on disk nor in memory: lost
        self.unspooled = 0  # answered clicks kept in memory only (the spool could not take them)
        self._rows: list[dict] = []
        self._memory_only: list[dict] = []  # those of _rows the spool could not take
        self._segment: Segment | None = None
        self._overflow = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._scanned_at = float("-inf")
        self._failures = 0  # writes failed in a row: the database is down while > 0
        self._kept = False  # segments this process left in the spool since its last replay
        atexit.register(self.close)

    def record(self, row: dict) -> None:
        if self.inline:
            # In the request's transaction: counted in the rollups with the click, and the
            # events go out when the view commits.
            store_clicks(db.session, [row])
            realtime.notify(row["partner_id"], "stats")
            realtime.notify_operators("stats", {"clicks": 1})
            return
        self.keep(row)

    def keep(self, row: dict) -> None:
        """Spool the click and hand it to the writer thread, whatever the mode (the redirect
        uses this directly when the database cannot be reached)."""
        self._ensure_thread()
        line = encode_row(row)
        with self._lock:
            on_disk = self._spool(line)
            if len(self._rows) < MEMORY_LIMIT:
                self._rows.append(row)
                if not on_disk:
                    self._memory_only.append(row)
            elif on_disk:
                self._overflow = True  # the segment has it: replayed from disk
            else:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.error("%d answered clicks refused: the click spool and memory are full", self.refused)
            full = len(self._rows) >= self.max_batch
        if full:
            self._wake.set()

    def _spool(self, line: bytes) -> bool:
        """Append the line to the current segment (under ``_lock``); False when it could not."""
        try:
            if self._segment is None:
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                self._segment = Segment(self.spool_dir)
            self._segment.append(line)
        except OSError as error:
            self.unspooled += 1
            if self.unspooled == 1 or self.unspooled % 1000 == 0:
                log.warning(
                    "%d clicks kept in memory only: the click spool failed (%s)", self.unspooled, error
                )
            return False
        return True

    def start(self) -> None:
        """Start the writer thread now (it replays what earlier processes left in the spool)
        rather than on the first click."""
        if not self.inline:
            self._ensure_thread()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def _ensure_thread(self) -> None:
        if os.getpid() != self._pid:  # forked: the parent's thread, rows and segment are not ours
            self._pid = os.getpid()
            self._rows = []
            self._memory_only = []
            self._segment = None  # the parent's descriptor (and its lock) stay the parent's
            self._overflow = False
            self._thread = None
            self._stopped = False
            self._scanned_at = float("-inf")
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = osthreads.Thread(target=self._run, name="click-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        with self._flush_lock:
            self.replay()  # what earlier processes left
        while not self._stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Insert every gathered click now (replaying the spool after a success); returns how
        many were written."""
        with self._flush_lock:
            failures = self._failures
            written = self._flush()
            if self._failures > failures:
                return written  # no use replaying now
            if self._kept or time.monotonic() - self._scanned_at >= SCAN_SECONDS:
                written += self.replay()
            return written

    def _flush(self) -> int:
        with self._lock:
            batch, self._rows = self._rows, []
            memory_only, self._memory_only = self._memory_only, []
            segment, self._segment = self._segment, None
            overflow, self._overflow = self._overflow, False
        if overflow:
            # Part of the segment never fitted in memory: the whole of it goes by replay.
            self._keep(segment, len(batch))
            self._hold(memory_only)
            return 0
        if not batch:
            if segment is not None:
                segment.discard()
            return 0
        try:
            written = self._write(batch)
        except Exception as error:  # noqa: BLE001 - whatever failed, the clicks stay on disk
            self._failed()
            self._keep(segment, len(batch), error)
            self._hold(batch if segment is None else memory_only)
            return 0
        if segment is not None:
            segment.discard()
        self._recovered()
        return written

    def _failed(self) -> None:
        self._failures += 1

    def _recovered(self) -> None:
        if self._failures:
            log.warning("the database takes clicks again after %d failed writes", self._failures)
            self._failures = 0

    def _hold(self, rows: list[dict]) -> None:
        """Put back in memory clicks that only memory holds (the disk is full), oldest first."""
        if not rows:
            return
        with self._lock:
            room = max(0, MEMORY_LIMIT - len(self._rows))
            kept, lost = rows[:room], len(rows) - room
            self._rows[:0] = kept
            self._memory_only[:0] = kept
            if lost > 0:
                self.refused += lost
                log.error("%d answered clicks refused: the click spool and memory are full", self.refused)

    def _keep(self, segment: Segment | None, count: int, error: Exception | None = None) -> None:
        if segment is None:
            if error is not None:
                log.error("writing %d clicks failed (%s); kept in memory, the spool failed", count, error)
            return
        self._kept = True
        try:
            segment.keep()
        except OSError:
            log.exception("could not fsync the click spool segment %s", segment.path)
        if error is not None and self._failures <= 1:  # one line per outage, not per batch
            log.error(
                "writing %d clicks failed (%s: %s); kept in %s for replay",
                count,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
                segment.path,
            )

    def _write(self, batch: list[dict]) -> int:
        """Insert a batch in one transaction; rows the database refuses (a link deleted
        meanwhile) are dropped one by one with a warning rather than block the rest."""
        try:
            with self.app.app_context(), db.engine.begin() as connection:
                begin_writing(connection)
                partners = store_clicks(connection, batch)
        except Exception as error:
            if _unavailable(error) or len(batch) == 1:
                raise
            partners = set()
            for row in batch:
                try:
                    with self.app.app_context(), db.engine.begin() as connection:
                        begin_writing(connection)
                        partners |= store_clicks(connection, [row])
                except Exception as row_error:
                    if _unavailable(row_error):
                        raise
                    log.warning("click %s refused by the database, dropped: %s", row["id"], row_error)
        try:
            # Committed outside any session: one emit to all the batch's partners, one to operators.
            realtime.notify_partners_now(partners, "stats")
            realtime.notify_operators_now("stats", {"clicks": len(batch)})
        except Exception:
            log.warning("could not announce %d new clicks", len(batch), exc_info=True)
        return len(batch)

    def replay(self) -> int:
        """Write the clicks of every spool segment no live process holds, oldest first, and
        delete each segment once it is in; returns how many clicks were read."""
        self._scanned_at = time.monotonic()
        try:
            paths = sorted(self.spool_dir.glob("*" + SUFFIX))
        except OSError:
            return 0
        replayed = 0
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # replayed by another process meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is writing it, or replaying it
                if not os.path.exists(path):
                    continue
                with os.fdopen(os.dup(fd), "rb") as file:
                    lines = file.read().splitlines()
                rows = []
                for number, line in enumerate(lines, 1):
                    try:
                        rows.append(decode_row(line))
                    except ValueError:
                        log.warning("skipped unreadable line %d of the click spool %s", number, path)
                for start in range(0, len(rows), max(self.max_batch, 1)):
                    self._write(rows[start : start + self.max_batch])
                path.unlink(missing_ok=True)
                replayed += len(rows)
                log.info("replayed %d clicks from %s", len(rows), path.name)
            except Exception as error:  # noqa: BLE001 - left for the next replay
                self._failed()
                self._kept = True  # try again after the next flush, not only in SCAN_SECONDS
                if self._failures <= 1:
                    log.error("replaying %s failed (%s); will retry", path.name, type(error).__name__)
                return replayed
            finally:
                os.close(fd)
        self._kept = False
        if replayed:
            self._recovered()
        return replayed

    def close(self) -> None:
        """Stop the thread and write what is left, or leave it in the spool (clean shutdown)."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        if self._flush_lock.acquire(timeout=5):
            try:
                self._flush()
            finally:
                self._flush_lock.release()
        else:  # the writer hangs on the database: what it holds is in its segment already
            with self._lock:
                segment, self._segment = self._segment, None
            self._keep(segment, 0)
        atexit.unregister(self.close)


def init_app(app: Flask) -> ClickWriter:
    writer = ClickWriter(app)
    app.extensions["click_writer"] = writer
    return writer
