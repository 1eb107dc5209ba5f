"""Periodic jobs. Each is idempotent: running it twice, or late, is harmless.

In production run them from cron (or a systemd timer) through the CLI:
``flask --app wsgi portal settle`` daily. ``python wsgi.py`` (development)
runs them in-process every few minutes.
"""

from __future__ import annotations

import logging
import threading
from datetime import date

from flask import Flask

from portal.database import begin_write
from portal.extensions import db

log = logging.getLogger(__name__)


def run_settlement(as_of: date | None = None):
    """Confirm due commissions and build the batch for the period just closed; commits."""
    from portal.services.payouts import settle
    from portal.services.program import get_program

    begin_write(db.session())
    try:
        result = settle(get_program(), as_of)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return result


def start_scheduler(app: Flask, every_seconds: float = 300.0) -> threading.Thread:
    """Development only: run the jobs in a background thread while the dev server runs."""
    stop = threading.Event()

    def loop():
        while not stop.wait(every_seconds):
            with app.app_context():
                try:
                    run_settlement()
                except Exception:
                    log.exception("scheduled settlement failed; will try again")

    thread = threading.Thread(target=loop, name="portal-jobs", daemon=True)
    thread.start()
    app.extensions["job_scheduler_stop"] = stop
    return thread
