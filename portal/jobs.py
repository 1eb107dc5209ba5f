"""Periodic jobs. Each is idempotent: running it twice, or twice at once, does the work once.

``flask --app wsgi portal run-triggers`` (announcements, campaigns starting, wake-ups,
e-mail), ``flask --app wsgi portal settle`` (confirm commissions, build the payout batch),
``flask --app wsgi portal confirm-commissions`` and ``flask --app wsgi portal close-month``
(ladder bonuses, tier downgrades) run them from cron or a systemd timer; the development
server's in-process scheduler runs them all.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime

from flask import Flask

from portal import osthreads
from portal.database import begin_write
from portal.extensions import db
from portal.models.types import utcnow

log = logging.getLogger(__name__)


@dataclass
class TriggerReport:
    announcements: int
    wake_ups: int
    emails: int
    campaigns: int = 0
    # Sales in another currency converted because their rate had arrived meanwhile.
    converted: int = 0
    # Outbox events the automatic-message consumer handled in this run (each sends at most one
    # message per partner), and webhook deliveries that reached their endpoint.
    events: int = 0
    webhooks: int = 0

    def __str__(self) -> str:
        return (
            f"{self.announcements} scheduled announcements published, "
            f"{self.campaigns} campaigns started, "
            f"{self.events} outbox events handled, "
            f"{self.wake_ups} wake-up messages, {self.emails} e-mails sent, "
            f"{self.webhooks} webhooks delivered, "
            f"{self.converted} held sales converted"
        )


def run_triggers(now: datetime | None = None) -> TriggerReport:
    """Publish due announcements, tell partners about campaigns starting, send the conversion
    messages the API left for later and due wake-ups, then send (or retry) waiting e-mails."""
    from portal.services import announcements, delivery, lifecycle, outbox, rewards
    from portal.services.program import get_program

    now = now or utcnow()
    published = announcements.publish_due(now)
    db.session.commit()
    campaigns = rewards.announce_starting_campaigns(get_program(), now)
    db.session.commit()
    wake_ups = lifecycle.send_wake_ups(now)
    db.session.commit()
    converted = _convert_held_sales()
    # Everything the outbox holds that no dispatcher handled yet (a crash, a stopped
    # process, OUTBOX_DISPATCH_MODE=off), and the webhooks whose retry is due.
    dispatched = outbox.drain()
    sent = delivery.send_ready() + delivery.retry_unsent()
    return TriggerReport(
        published,
        wake_ups,
        sent,
        campaigns=campaigns,
        events=dispatched.handled.get("messages", 0),
        webhooks=dispatched.webhooks_sent,
        converted=converted,
    )


def _convert_held_sales() -> int:
    """Sales in another currency still held although a rate for their day is now stored: one
    held while the rate was being saved (neither transaction saw the other) waits no longer
    than the next run. Nothing to do costs one look at a partial index."""
    from portal.services import tracking
    from portal.services.program import get_program

    if not tracking.count_waiting_for_rate():
        return 0
    begin_write(db.session())
    converted = tracking.convert_waiting(get_program())
    db.session.commit()
    return converted


def run_confirm(now: datetime | None = None) -> int:
    """Pending commission lines whose hold period has ended become confirmed; commits."""
    from portal.services.payouts import confirm_due_commissions

    count = confirm_due_commissions(now or utcnow())
    db.session.commit()
    return count


def run_close_month(month: str | None = None, now: datetime | None = None):
    """Close ``month`` (YYYY-MM; default: the month that last ended in the program's zone):
    ladder bonuses and tier evaluation. Safe to run twice; commits."""
    from portal.services import rewards
    from portal.services.program import get_program

    now = now or utcnow()
    program = get_program()
    begin_write(db.session())
    try:
        report = rewards.close_month(
            program, month or rewards.previous_month(now, rewards.zone(program)), now
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return report


def run_rewards(now: datetime | None = None):
    """The scheduler's rewards step: close the month that just ended, if nobody has yet."""
    from portal.services import rewards
    from portal.services.program import get_program

    begin_write(db.session())
    try:
        report = rewards.close_due_month(get_program(), now or utcnow())
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return report


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


class Scheduler:
    """Development only: runs ``run_triggers``, settlement and the month close every few minutes
    in a daemon thread."""

    def __init__(self, app: Flask, interval: float):
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread = osthreads.Thread(target=self._run, name="portal-scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> TriggerReport | None:
        with self.app.app_context():
            try:
                report = run_triggers()
                run_settlement()
                run_rewards()
                return report
            except Exception:
                db.session.rollback()
                log.exception("scheduled jobs failed; they run again next time")
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
