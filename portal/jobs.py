"""Periodic jobs. Each is idempotent: running it twice, or twice at once, does the work once.

``flask --app wsgi portal run-triggers`` runs them (cron, a systemd timer, or
the in-process scheduler of the development server).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from flask import Flask

from portal.extensions import db
from portal.models.types import utcnow

log = logging.getLogger(__name__)


@dataclass
class TriggerReport:
    announcements: int
    wake_ups: int
    emails: int

    def __str__(self) -> str:
        return (
            f"{self.announcements} scheduled announcements published, "
            f"{self.wake_ups} wake-up messages, {self.emails} e-mails sent"
        )


def run_triggers(now: datetime | None = None) -> TriggerReport:
    """Publish due announcements, send due wake-ups, then send (or retry) waiting e-mails."""
    from portal.services import announcements, delivery, lifecycle

    now = now or utcnow()
    published = announcements.publish_due(now)
    db.session.commit()
    wake_ups = lifecycle.send_wake_ups(now)
    db.session.commit()
    sent = delivery.send_ready() + delivery.retry_unsent()
    return TriggerReport(published, wake_ups, sent)


class Scheduler:
    """Development only: runs ``run_triggers`` every few minutes in a daemon thread."""

    def __init__(self, app: Flask, interval: float):
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portal-scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> TriggerReport | None:
        with self.app.app_context():
            try:
                return run_triggers()
            except Exception:
                db.session.rollback()
                log.exception("run-triggers failed")
                return None
            finally:
                db.session.remove()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()


def start_scheduler(app: Flask) -> Scheduler | None:
    """Start the in-process scheduler when SCHEDULER_ENABLED says so (development)."""
    if not app.config.get("SCHEDULER_ENABLED"):
        return None
    interval = app.config["SCHEDULER_INTERVAL_SECONDS"]
    app.logger.info("In-process scheduler: run-triggers every %s s", interval)
    return Scheduler(app, interval).start()
