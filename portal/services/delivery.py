"""E-mail delivery of partner messages: preferences, unsubscribe links and the outbox.

Messages always reach the portal. An e-mail copy goes out only when SMTP is
configured and the partner has not switched that kind off. The e-mail is
written to the outbox in the same transaction as the message and sent after
the commit (``send_ready``, called at the end of each request and by the
``run-triggers`` job, which also retries failures) — so there is never an
e-mail about a message that was rolled back, and never a lost one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.errors import InvalidToken
from portal.extensions import db
from portal.i18n import speaking_to
from portal.mail import MailError, build_message, send_message
from portal.markup import markdown_to_text, render_markdown
from portal.models import EMAIL_KINDS, EmailPreference, OutboundEmail, Partner
from portal.models.types import utcnow
from portal.urls import absolute_url

MAX_ATTEMPTS = 5
# At most this many e-mails are sent at the end of the request that wrote them.
INLINE_LIMIT = 10
# A claim older than this is taken to belong to a sender that died.
CLAIM_TIMEOUT = timedelta(minutes=10)
_PENDING_KEY = "portal_pending_mail"
_READY_KEY = "portal_ready_mail"


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


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="email-unsubscribe")


def unsubscribe_token(partner: Partner, kind: str) -> str:
    return _serializer().dumps([partner.id, kind])


def unsubscribe_url(partner: Partner, kind: str) -> str:
    return absolute_url("auth.unsubscribe", token=unsubscribe_token(partner, kind))


def read_unsubscribe_token(token: str) -> tuple[Partner, str]:
    """The partner and kind a signed unsubscribe token names; InvalidToken otherwise."""
    try:
        partner_id, kind = _serializer().loads(token)
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
    """Send what a request committed once the view is done (small batches only)."""

    @app.after_request
    def send_committed_mail(response):
        if not db.session.registry.has():
            return response  # no session in this request: nothing it committed
        try:
            send_ready(limit=INLINE_LIMIT)
        except Exception:
            db.session.rollback()
            app.logger.exception("sending queued e-mail failed; run-triggers will retry")
        return response


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
    outbound = OutboundEmail(
        partner_id=partner.id,
        kind=kind,
        to_address=partner.user.email,
        subject=subject[:300],
        text=text,
        html=html,
        unsubscribe_url=unsubscribe,
    )
    db.session.add(outbound)
    db.session.flush()
    db.session.info.setdefault(_PENDING_KEY, []).append(outbound.id)
    return True


@event.listens_for(Session, "after_commit")
def _ready_after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:
        session.info.setdefault(_READY_KEY, []).extend(pending)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)


def _claim(outbound_id: int, now: datetime) -> bool:
    """Take one unsent e-mail for this sender; False if someone else has it or it is done."""
    result = db.session.execute(
        sa.update(OutboundEmail)
        .where(
            OutboundEmail.id == outbound_id,
            OutboundEmail.sent_at.is_(None),
            OutboundEmail.attempts < MAX_ATTEMPTS,
            sa.or_(OutboundEmail.claimed_at.is_(None), OutboundEmail.claimed_at < now - CLAIM_TIMEOUT),
        )
        .values(claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def _send_one(outbound_id: int) -> bool:
    now = utcnow()
    if not _claim(outbound_id, now):
        return False
    outbound = db.session.get(OutboundEmail, outbound_id)
    db.session.refresh(outbound)
    message = build_message(outbound.to_address, outbound.subject, outbound.text, outbound.html)
    # RFC 8058: mail clients show an unsubscribe button that POSTs to this address.
    message["List-Unsubscribe"] = f"<{outbound.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    try:
        send_message(message)
    except MailError as error:
        outbound.attempts += 1
        outbound.last_error = str(error)[:1000]
        outbound.claimed_at = None
        db.session.commit()
        return False
    outbound.attempts += 1
    outbound.sent_at = utcnow()
    outbound.last_error = None
    db.session.commit()
    return True


def send_outbox(ids: Iterable[int]) -> int:
    """Send these outbox e-mails now (those nobody else is sending); returns how many went out."""
    return sum(1 for outbound_id in ids if _send_one(outbound_id))


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
    """Send what is still waiting (a failed attempt, a crash between commit and send)."""
    if not mail_configured():
        return 0
    ids = db.session.scalars(
        sa.select(OutboundEmail.id)
        .where(OutboundEmail.sent_at.is_(None), OutboundEmail.attempts < MAX_ATTEMPTS)
        .order_by(OutboundEmail.id)
        .limit(limit)
    ).all()
    db.session.commit()
    return send_outbox(ids)
