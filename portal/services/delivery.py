"""E-mail delivery of partner messages: preferences, unsubscribe links and the outbox.

Messages always reach the portal. An e-mail copy goes out only when SMTP is
configured and the partner has not switched that kind off. The e-mail is
written to the outbox in the same transaction as the message and sent after
the commit — so there is never an e-mail about a message that was rolled back,
and never a lost one. A request only hands the ids of what it committed to a
background sender in its process (``MAIL_SEND_MODE=background``), so a slow or
silent SMTP server never holds up a page; the ``run-triggers`` job sends whatever
is still due.

Retries go by time, not by count: after a failed attempt an e-mail waits
``retry_delay(attempts)`` (1 minute, doubling, at most 4 hours) and is given
up 48 hours after it was written (each configurable). A server that does not
answer ends the batch: the rest stay due, without an attempt counted against them.
"""

from __future__ import annotations

import queue
import smtplib
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from email.message import EmailMessage

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import gettext as _
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal import osthreads
from portal.errors import InvalidToken
from portal.extensions import db
from portal.i18n import speaking_to
from portal.mail import MailError, build_message, send_message
from portal.markup import markdown_to_text, render_markdown
from portal.models import EMAIL_KINDS, EmailPreference, OutboundEmail, Partner
from portal.models.types import utcnow
from portal.urls import absolute_url

# At most this many e-mails are sent right after the request that wrote them.
INLINE_LIMIT = 10
# A claim older than this is taken to belong to a sender that died.
CLAIM_TIMEOUT = timedelta(minutes=10)
_PENDING_KEY = "portal_pending_mail"
_READY_KEY = "portal_ready_mail"
# Built messages sent after the commit but never stored (see send_after_commit).
_PENDING_DIRECT_KEY = "portal_pending_direct_mail"
_READY_DIRECT_KEY = "portal_ready_direct_mail"


def email_kind_label(kind: str) -> str:
    return {
        "message": _("Personal messages from the program team"),
        "announcement": _("Announcements"),
        "welcome": _("Welcome when you are approved"),
        "first_conversion": _("Your first sale"),
        "wake_up": _("Reminders when your links have gone quiet"),
        "tier_upgrade": _("Moving up a tier"),
        "payout_sent": _("Payouts sent"),
        "new_creatives": _("New creatives for your channels"),
        "campaign_starting": _("Campaigns starting"),
        "conversion_rejected": _("Rejected sales"),
    }.get(kind, kind)


# --- preferences ---------------------------------------------------------------------


def email_preferences(partner: Partner) -> dict[str, bool]:
    """Every kind with its switch; kinds without a row are on."""
    rows = db.session.execute(
        sa.select(EmailPreference.kind, EmailPreference.enabled).where(
            EmailPreference.partner_id == partner.id
        )
    )
    stored = dict(rows.all())
    return {kind: stored.get(kind, True) for kind in EMAIL_KINDS}


def set_email_preference(partner: Partner, kind: str, enabled: bool) -> None:
    if kind not in EMAIL_KINDS:
        raise ValueError(f"unknown e-mail kind {kind!r}")
    row = db.session.get(EmailPreference, (partner.id, kind))
    if row is None:
        db.session.add(EmailPreference(partner_id=partner.id, kind=kind, enabled=enabled))
    else:
        row.enabled = enabled
    db.session.flush()


def update_email_preferences(partner: Partner, switches: dict[str, bool]) -> None:
    for kind in EMAIL_KINDS:
        if kind in switches:
            set_email_preference(partner, kind, bool(switches[kind]))


def wants_email(partner: Partner, kind: str) -> bool:
    row = db.session.get(EmailPreference, (partner.id, kind))
    return row is None or row.enabled


# --- one-click unsubscribe -----------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    # Timed (salt "-v2"): links mailed before tokens expired are no longer accepted.
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="email-unsubscribe-v2")


def unsubscribe_token(partner: Partner, kind: str) -> str:
    return _serializer().dumps([partner.id, kind])


def unsubscribe_url(partner: Partner, kind: str) -> str:
    return absolute_url("auth.unsubscribe", token=unsubscribe_token(partner, kind))


def read_unsubscribe_token(token: str) -> tuple[Partner, str]:
    """The partner and kind a signed unsubscribe token names; InvalidToken otherwise."""
    try:
        partner_id, kind = _serializer().loads(token, max_age=current_app.config["UNSUBSCRIBE_MAX_AGE"])
    except SignatureExpired as exc:
        raise InvalidToken(
            _("This unsubscribe link has expired. Sign in to change your e-mail settings.")
        ) from exc
    except (BadSignature, ValueError, TypeError) as exc:
        raise InvalidToken(_("This unsubscribe link is not valid.")) from exc
    partner = db.session.get(Partner, partner_id) if isinstance(partner_id, int) else None
    if partner is None or kind not in EMAIL_KINDS:
        raise InvalidToken(_("This unsubscribe link is not valid."))
    return partner, kind


def unsubscribe(token: str) -> tuple[Partner, str]:
    """Switch off the e-mails of the token's kind. Repeating it changes nothing."""
    partner, kind = read_unsubscribe_token(token)
    set_email_preference(partner, kind, False)
    return partner, kind


def resubscribe(token: str) -> tuple[Partner, str]:
    partner, kind = read_unsubscribe_token(token)
    set_email_preference(partner, kind, True)
    return partner, kind


# --- the outbox ------------------------------------------------------------------------


def init_app(app) -> None:
    """Send what a request committed once the view is done (small batches only), off the request."""
    app.extensions["mail_sender"] = sender = MailSender(app)

    @app.after_request
    def send_committed_mail(response):
        if not db.session.registry.has():
            return response  # no session in this request: nothing it committed
        direct = db.session.info.pop(_READY_DIRECT_KEY, None)
        if direct:
            if app.config["MAIL_SEND_MODE"] == "inline":
                _send_direct(direct)
            else:
                sender.submit_direct(direct)
        ready = db.session.info.pop(_READY_KEY, None)
        if not ready or not mail_configured() or len(ready) > INLINE_LIMIT:
            return response  # a large batch is left to run-triggers
        if app.config["MAIL_SEND_MODE"] == "inline":
            try:
                send_outbox(ready)
            except Exception:
                db.session.rollback()
                app.logger.exception("sending queued e-mail failed; run-triggers will retry")
        else:
            sender.submit(ready)
        return response


class MailSender:
    """One thread per process that sends what requests committed, so that no page waits on SMTP.

    Started on first use (after gunicorn forks). What it has not sent when the process
    ends stays due in the outbox and goes out with the next ``run-triggers``.
    """

    def __init__(self, app):
        self.app = app
        # Each job: a sending function and what it sends (outbox ids, or built messages).
        self.queue: queue.Queue[tuple[Callable[[list], object], list]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, ids: list[int]) -> None:
        self._put(send_outbox, list(ids))

    def submit_direct(self, messages: list[EmailMessage]) -> None:
        self._put(_send_direct, list(messages))

    def _put(self, send: Callable[[list], object], items: list) -> None:
        self.queue.put((send, items))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = osthreads.Thread(target=self._run, name="mail-sender", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            send, items = self.queue.get()
            try:
                with self.app.app_context():
                    try:
                        send(items)
                    finally:
                        db.session.remove()
            except Exception:  # the thread must outlive any one failure
                self.app.logger.exception("sending queued e-mail failed; run-triggers will retry")
            finally:
                self.queue.task_done()


def mail_configured() -> bool:
    return bool(current_app.config.get("MAIL_SERVER"))


def queue_email(partner: Partner, kind: str, subject: str, body_markdown: str, link: str | None) -> bool:
    """Write the e-mail copy of a message to the outbox, if SMTP is set up and the partner wants it."""
    if not mail_configured() or not partner.user.active or not wants_email(partner, kind):
        return False
    unsubscribe = unsubscribe_url(partner, kind)
    # The e-mail's own words in the partner's language, whoever's request sends it.
    with speaking_to(partner.user):
        context = {
            "partner": partner,
            "subject": subject,
            "link": link,
            "unsubscribe": unsubscribe,
            "kind_label": email_kind_label(kind),
        }
        text = render_template("email/message.txt", body=markdown_to_text(body_markdown), **context)
        html = render_template("email/message.html", body=render_markdown(body_markdown), **context)
    _write_outbox(partner, kind, subject, text, html, unsubscribe)
    return True


def queue_notice(partner: Partner, kind: str, subject: str, text: str) -> bool:
    """Write a security notice to the outbox (a change to the partner's account they must
    hear about): sent whenever SMTP is set up, whatever the partner's e-mail switches, and
    without an unsubscribe link. In the caller's transaction, like every outbox row."""
    if not mail_configured():
        return False
    _write_outbox(partner, kind, subject, text, None, "")
    return True


def _write_outbox(
    partner: Partner, kind: str, subject: str, text: str, html: str | None, unsubscribe_url: str
) -> None:
    """One e-mail to the partner in the outbox, sent after the caller's transaction commits."""
    outbound = OutboundEmail(
        partner_id=partner.id,
        kind=kind,
        to_address=partner.user.email,
        subject=subject[:300],
        text=text,
        html=html,
        unsubscribe_url=unsubscribe_url,
    )
    db.session.add(outbound)
    db.session.flush()
    db.session.info.setdefault(_PENDING_KEY, []).append(outbound.id)


def payout_details_changed(partner: Partner, *, before: str, after: str, held: bool) -> bool:
    """The notice that the partner's payout destination changed (``before`` and ``after``
    already masked), to their sign-in address."""
    from flask_babel import format_datetime

    # In the partner's language and time zone, whoever's request made the change.
    with speaking_to(partner.user):
        subject = _("Your payout details were changed")
        text = render_template(
            "email/payout_details_changed.txt",
            partner=partner,
            before=before,
            after=after,
            held=held,
            when=format_datetime(utcnow()),
            link=absolute_url("partner.payout_details"),
        )
    return queue_notice(partner, "payout_details_changed", subject, text)


def send_after_commit(to: str, subject: str, text: str) -> None:
    """Send this e-mail once the caller's transaction commits, after the response, never
    inside the request: for mail that must not be stored (a password-reset link is a key
    to the account for as long as it is valid) and whose sending must not show in the
    answer (a page that waits on SMTP, or says the mail server is down, only for known
    addresses tells who has an account). Not retried: a failure is logged, and the person
    asks again. ``MAIL_SEND_MODE=inline`` sends at the end of the request instead."""
    message = build_message(to, subject, text, None)
    db.session.info.setdefault(_PENDING_DIRECT_KEY, []).append(message)


def _send_direct(messages: list[EmailMessage]) -> None:
    for message in messages:
        try:
            send_message(message)
        except MailError:
            current_app.logger.warning("an e-mail sent after its request failed; it is not retried")


@event.listens_for(Session, "after_commit")
def _ready_after_commit(session: Session) -> None:
    for pending_key, ready_key in ((_PENDING_KEY, _READY_KEY), (_PENDING_DIRECT_KEY, _READY_DIRECT_KEY)):
        pending = session.info.pop(pending_key, None)
        if pending:
            session.info.setdefault(ready_key, []).extend(pending)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_PENDING_DIRECT_KEY, None)


def retry_delay(attempts: int) -> timedelta:
    """How long an e-mail waits after its ``attempts``-th failed attempt: 1 min, 2, 4 … at most 4 h
    (MAIL_RETRY_FIRST_SECONDS, MAIL_RETRY_MAX_SECONDS)."""
    config = current_app.config
    first = timedelta(seconds=config["MAIL_RETRY_FIRST_SECONDS"])
    doublings = min(max(attempts - 1, 0), 30)  # the cap is reached long before; no overflow
    return min(first * 2**doublings, timedelta(seconds=config["MAIL_RETRY_MAX_SECONDS"]))


def give_up_after() -> timedelta:
    """An e-mail not sent this long after it was written is given up (MAIL_GIVE_UP_HOURS, 48)."""
    return timedelta(hours=current_app.config["MAIL_GIVE_UP_HOURS"])


def _due(now: datetime):
    """Unsent, not given up, and its next attempt has come."""
    return sa.and_(
        OutboundEmail.sent_at.is_(None),
        OutboundEmail.created_at > now - give_up_after(),
        sa.or_(OutboundEmail.next_attempt_at.is_(None), OutboundEmail.next_attempt_at <= now),
    )


def _claim(outbound_id: int, now: datetime) -> bool:
    """Take one due e-mail for this sender; False if someone else has it, it is done or not yet due."""
    result = db.session.execute(
        sa.update(OutboundEmail)
        .where(
            OutboundEmail.id == outbound_id,
            _due(now),
            sa.or_(OutboundEmail.claimed_at.is_(None), OutboundEmail.claimed_at < now - CLAIM_TIMEOUT),
        )
        .values(claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


class _ServerUnavailable(Exception):
    """The SMTP server did not answer: stop this batch, the rest stay due."""


# The server answered and refused this one message; others may still go.
_MESSAGE_REFUSED = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
)


def _send_one(outbound_id: int) -> bool:
    now = utcnow()
    if not _claim(outbound_id, now):
        return False
    outbound = db.session.get(OutboundEmail, outbound_id)
    db.session.refresh(outbound)
    message = build_message(outbound.to_address, outbound.subject, outbound.text, outbound.html)
    if outbound.unsubscribe_url:  # a security notice (queue_notice) has none
        # RFC 8058: mail clients show an unsubscribe button that POSTs to this address.
        message["List-Unsubscribe"] = f"<{outbound.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    try:
        send_message(message)
    except MailError as error:
        outbound.attempts += 1
        outbound.last_error = str(error)[:1000] or type(error.__cause__).__name__
        outbound.claimed_at = None
        outbound.next_attempt_at = utcnow() + retry_delay(outbound.attempts)
        db.session.commit()
        if not isinstance(error.__cause__, _MESSAGE_REFUSED):
            raise _ServerUnavailable from error
        return False
    outbound.attempts += 1
    outbound.sent_at = utcnow()
    outbound.last_error = None
    outbound.next_attempt_at = None
    db.session.commit()
    return True


def send_outbox(ids: Iterable[int]) -> int:
    """Send these outbox e-mails now (those due that nobody else is sending); returns how many went out.

    The first one the server does not answer ends the batch: trying the others now
    would only wait out the same timeout once per e-mail."""
    sent = 0
    for outbound_id in ids:
        try:
            sent += _send_one(outbound_id)
        except _ServerUnavailable:
            break
    return sent


def send_ready(limit: int | None = None) -> int:
    """Send the e-mails whose transaction has committed in this session.

    At the end of a request only a few go out at once (a reply, a welcome); a
    larger batch (an announcement to hundreds) is left to the ``run-triggers``
    job so the manager's request does not wait for hundreds of SMTP exchanges.
    """
    ready = db.session.info.pop(_READY_KEY, None)
    if not ready or not mail_configured():
        return 0
    if limit is not None and len(ready) > limit:
        return 0
    return send_outbox(ready)


def retry_unsent(limit: int = 200) -> int:
    """Send what is due (a failed attempt whose wait is over, a crash between commit and send)."""
    if not mail_configured():
        return 0
    ids = db.session.scalars(
        sa.select(OutboundEmail.id).where(_due(utcnow())).order_by(OutboundEmail.id).limit(limit)
    ).all()
    db.session.commit()
    return send_outbox(ids)


def outbox_waiting(limit: int = 200) -> list[OutboundEmail]:
    """What the operator sees: unsent e-mails, oldest first, with their last error and next attempt."""
    return list(
        db.session.scalars(
            sa.select(OutboundEmail)
            .where(OutboundEmail.sent_at.is_(None))
            .order_by(OutboundEmail.created_at, OutboundEmail.id)
            .limit(limit)
        )
    )


def outbox_state(outbound: OutboundEmail, now: datetime) -> str:
    """``sending`` (claimed now), ``due``, ``waiting`` (a retry is set) or ``given_up`` (48 h passed)."""
    if outbound.created_at <= now - give_up_after():
        return "given_up"
    if outbound.claimed_at is not None and outbound.claimed_at > now - CLAIM_TIMEOUT:
        return "sending"
    if outbound.next_attempt_at is not None and outbound.next_attempt_at > now:
        return "waiting"
    return "due"


def outbox_counts(now: datetime) -> dict[str, int]:
    """How many unsent e-mails are in each state of ``outbox_state``."""
    state = sa.case(
        (OutboundEmail.created_at <= now - give_up_after(), "given_up"),
        (OutboundEmail.claimed_at > now - CLAIM_TIMEOUT, "sending"),
        (OutboundEmail.next_attempt_at > now, "waiting"),
        else_="due",
    )
    rows = db.session.execute(
        sa.select(state, sa.func.count()).where(OutboundEmail.sent_at.is_(None)).group_by(state)
    )
    return {**dict.fromkeys(("sending", "due", "waiting", "given_up"), 0), **dict(rows.all())}
