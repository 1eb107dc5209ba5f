"""Writes clicks in batches off the request thread, and never drops them on a clean shutdown.

``record()`` appends to an in-memory list; a background thread inserts what has
gathered every ``CLICK_FLUSH_SECONDS`` (or sooner when a batch fills), counts it in
the dashboard rollups in the same transaction, and then tells each partner in the
batch once ("stats") and the operators once. ``close()``
(registered with ``atexit`` and gunicorn's ``worker_exit`` hook) writes what is
left. ``CLICK_WRITE_MODE=inline`` writes in the request's own transaction
instead (tests, and anyone who prefers it).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from flask import Flask

from portal import realtime
from portal.extensions import db
from portal.services.clicks import store_clicks

log = logging.getLogger(__name__)


class ClickWriter:
    def __init__(self, app: Flask):
        self.app = app
        self.inline = app.config["CLICK_WRITE_MODE"] == "inline"
        self.interval = app.config["CLICK_FLUSH_SECONDS"]
        self.max_batch = app.config["CLICK_BATCH_SIZE"]
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        atexit.register(self.close)

    def record(self, row: dict) -> None:
        if self.inline:
            # In the request's transaction: counted in the rollups with the click, and the
            # events go out when the view commits.
            store_clicks(db.session, [row])
            realtime.notify(row["partner_id"], "stats")
            realtime.notify_operators("stats", {"clicks": 1})
            return
        self._ensure_thread()
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= self.max_batch
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def _ensure_thread(self) -> None:
        if os.getpid() != self._pid:  # forked: the parent's thread and rows are not ours
            self._pid = os.getpid()
            self._rows = []
            self._thread = None
            self._stopped = False
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="click-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Insert every gathered click now; returns how many were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._rows = self._rows, []
            if not batch:
                return 0
            try:
                with self.app.app_context(), db.engine.begin() as connection:
                    partners = store_clicks(connection, batch)
            except Exception:
                # Keep them for the next attempt rather than lose money-path data.
                log.exception("writing %d clicks failed; will retry", len(batch))
                with self._lock:
                    self._rows[:0] = batch
                return 0
            try:
                # Committed outside any session: one emit to all the batch's partners, one to operators.
                realtime.notify_partners_now(partners, "stats")
                realtime.notify_operators_now("stats", {"clicks": len(batch)})
            except Exception:
                log.warning("could not announce %d new clicks", len(batch), exc_info=True)
            return len(batch)

    def close(self) -> None:
        """Stop the thread and write what is left (clean shutdown)."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=10)
        self.flush()
        atexit.unregister(self.close)


def init_app(app: Flask) -> ClickWriter:
    writer = ClickWriter(app)
    app.extensions["click_writer"] = writer
    return writer
