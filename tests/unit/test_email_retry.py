"""E-mail retries by time (1 minute doubling to 4 hours, given up after 48 h) and the operator's outbox."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import OutboundEmail, Role
from portal.models.types import utcnow
from portal.services import delivery, inbox
from tests.conftest import free_port
from tests.factories import PartnerFactory, UserFactory


def test_the_retry_delay_doubles_from_a_minute_to_at_most_four_hours(app):
    with app.app_context():
        delays = [delivery.retry_delay(n) for n in range(1, 12)]
    assert delays[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert delays[8] == timedelta(hours=4)  # 256 minutes, capped
    assert all(d == timedelta(hours=4) for d in delays[8:])
    assert delays == sorted(delays)


def _queue_three(db, manager) -> list[int]:
    for n in range(3):
        inbox.start_thread(PartnerFactory(), manager, f"Hello {n}", "Body")
    db.session.commit()
    return list(db.session.scalars(sa.select(OutboundEmail.id).order_by(OutboundEmail.id)))


@pytest.mark.smtp
def test_a_failed_email_waits_its_back_off_then_goes_once(app, db, program, mail_outbox):
    manager = UserFactory(role=Role.MANAGER)
    port = app.config["MAIL_PORT"]
    with time_machine.travel("2026-12-02 10:00:00+00:00", tick=False):
        ids = _queue_three(db, manager)
        db.session.info.pop("portal_ready_mail", None)
        app.config["MAIL_PORT"] = free_port()  # nobody listens
        assert delivery.retry_unsent() == 0
        first = db.session.get(OutboundEmail, ids[0])
        db.session.refresh(first)
        # The server refused the connection: the batch stopped at the first e-mail.
        assert (first.attempts, first.next_attempt_at) == (1, utcnow() + timedelta(minutes=1))
        assert "refused" in first.last_error.lower() or first.last_error
        others = db.session.scalars(sa.select(OutboundEmail.attempts).where(OutboundEmail.id != ids[0])).all()
        assert others == [0, 0]
    app.config["MAIL_PORT"] = port
    with time_machine.travel("2026-12-02 10:00:30+00:00", tick=False):
        assert delivery.retry_unsent() == 2  # the two never tried; the first waits its minute
    with time_machine.travel("2026-12-02 10:01:00+00:00", tick=False):
        assert delivery.retry_unsent() == 1
        assert delivery.retry_unsent() == 0
    assert sorted(m["Subject"] for m in mail_outbox) == ["Hello 0", "Hello 1", "Hello 2"]


@pytest.mark.smtp
def test_an_email_is_given_up_48_hours_after_it_was_written(app, db, program, mail_outbox, client, login_as):
    with time_machine.travel("2026-12-02 10:00:00+00:00", tick=False):
        inbox.start_thread(PartnerFactory(), UserFactory(role=Role.MANAGER), "Late", "Body")
        db.session.commit()
        db.session.info.pop("portal_ready_mail", None)
    with time_machine.travel("2026-12-04 09:59:00+00:00", tick=False):
        # Signed in on the pinned clock (a session started at the real time is from the future
        # once the real clock is past 2026-12-04 09:59 UTC: this failed from then on).
        login_as(Role.MANAGER)
        page = client.get("/admin/outbox").get_data(as_text=True)
        assert 'data-testid="count-due">1<' in page
    with time_machine.travel("2026-12-04 10:00:00+00:00", tick=False):
        assert delivery.retry_unsent() == 0
        assert mail_outbox == []
        page = client.get("/admin/outbox").get_data(as_text=True)
        assert 'data-testid="count-given-up">1<' in page
        assert 'data-state="given_up"' in page


def test_the_outbox_shows_what_waits_and_why(app, db, program, client, login_as):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_TIMEOUT=2)
    with time_machine.travel("2026-12-02 10:00:00+00:00", tick=False):
        # Signed in on the pinned clock: a session started at the real time would be from the
        # future once the real clock is past the pinned one (this failed after 10:00 UTC on 2 Dec).
        manager = login_as(Role.MANAGER)
        inbox.start_thread(PartnerFactory(user__email="wait@example.org"), manager, "Waiting one", "Body")
        db.session.commit()
        db.session.info.pop("portal_ready_mail", None)
        assert delivery.retry_unsent() == 0
        page = client.get("/admin/outbox").get_data(as_text=True)
    assert "wait@example.org" in page and "Waiting one" in page
    assert 'data-state="waiting"' in page
    assert 'data-testid="count-waiting">1<' in page
    assert "Connection refused" in page


class _SilentServer:
    """Accepts TCP connections and never says a word (a hung mail server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_silent_server_costs_one_timeout_per_batch_not_one_per_email(app, db, program):
    manager = UserFactory(role=Role.MANAGER)
    server = _SilentServer()
    try:
        app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=server.port, MAIL_TIMEOUT=1)
        _queue_three(db, manager)
        db.session.info.pop("portal_ready_mail", None)
        started = time.monotonic()
        assert delivery.retry_unsent() == 0
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert 0.9 < elapsed < 2.5
    attempts = db.session.scalars(sa.select(OutboundEmail.attempts).order_by(OutboundEmail.id)).all()
    assert attempts == [1, 0, 0]
