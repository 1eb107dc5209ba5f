"""Accounts: users, partner applications and their review, sign-in, password reset."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import gettext as _
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from portal import realtime
from portal.errors import (
    DomainError,
    DuplicateEmail,
    InvalidCredentials,
    InvalidToken,
    InvalidTransition,
    WeakPassword,
)
from portal.extensions import db
from portal.i18n import speaking_to
from portal.mail import send_mail
from portal.models import Partner, PartnerStatus, Role, User
from portal.models.types import utcnow
from portal.services import delivery, events
from portal.services.audit import record_event

# Re-exported: its home is services.identity, which payouts imports without accounts.
from portal.services.identity import confirm_identity as confirm_identity

MIN_PASSWORD_LENGTH = 10
# Ref codes avoid look-alike characters so partners can read them aloud.
_REF_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password12", "password123", "1234567890", "12345678910",
        "qwertyuiop", "qwerty1234", "iloveyou12", "letmein123", "welcome123", "admin12345",
        "abcdefghij", "abc1234567", "passw0rd12", "football12", "baseball12", "monkey1234",
        "partner123", "partnerportal", "changeme123", "portal-demo-weak",
    }
)  # fmt: skip


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_strength(password: str, *, email: str = "", name: str = "") -> None:
    """Raise WeakPassword unless the password is long and not guessable from the account."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(_("Use at least %(n)d characters.", n=MIN_PASSWORD_LENGTH), "password")
    lowered = password.lower()
    if lowered in _COMMON_PASSWORDS or len(set(lowered)) < 4:
        raise WeakPassword(_("This password is too easy to guess."), "password")
    local_part = normalise_email(email).split("@")[0]
    if (local_part and len(local_part) >= 4 and local_part in lowered) or (
        name and len(name.strip()) >= 4 and name.strip().lower() in lowered
    ):
        raise WeakPassword(_("Do not use your name or e-mail in the password."), "password")


def find_user_by_email(email: str) -> User | None:
    return db.session.scalars(sa.select(User).where(User.email == normalise_email(email))).first()


def _ensure_email_free(email: str) -> None:
    if find_user_by_email(email) is not None:
        raise DuplicateEmail(_("An account with this e-mail already exists."), "email")


def create_user(email: str, name: str, password: str, role: Role) -> User:
    """Create an operator (or partner) account; the e-mail must be unused."""
    _ensure_email_free(email)
    check_password_strength(password, email=email, name=name)
    user = User(email=normalise_email(email), name=name.strip(), role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


def generate_ref_code(length: int = 8) -> str:
    """A random ref code not used by any partner yet."""
    while True:
        code = "".join(secrets.choice(_REF_ALPHABET) for _ in range(length))
        taken = db.session.scalar(sa.select(sa.func.count()).where(Partner.ref_code == code))
        if not taken:
            return code


@dataclass
class Application:
    name: str
    email: str
    password: str
    country: str
    channels: list[str]
    promotion_description: str
    website: str | None = None
    social_profiles: str | None = None


def _checked_website(raw: str | None) -> str | None:
    """The applicant's website as an http(s) address the console may link to, or nothing."""
    if not (raw or "").strip():
        return None
    from portal.urlcheck import UnsafeUrl, clean_destination

    try:
        return clean_destination(raw, None)
    except UnsafeUrl:
        raise DomainError(_("Enter your website's address, starting with https://."), "website") from None


def apply_as_partner(application: Application) -> Partner:
    """Register an applicant: a partner user whose partner record waits for review."""
    website = _checked_website(application.website)
    user = create_user(application.email, application.name, application.password, Role.PARTNER)
    partner = Partner(
        user=user,
        ref_code=generate_ref_code(),
        status=PartnerStatus.APPLIED,
        website=website,
        social_profiles=(application.social_profiles or "").strip() or None,
        channels=list(dict.fromkeys(application.channels)),
        promotion_description=application.promotion_description.strip(),
        country=application.country.upper(),
    )
    db.session.add(partner)
    db.session.flush()
    record_event(user, "partner.applied", "partner", partner.id)
    events.record(
        "partner.applied",
        {
            "partner_id": partner.id,
            "ref_code": partner.ref_code,
            "name": user.name,
            "channels": partner.channels,
        },
        partner_id=partner.id,
    )
    realtime.notify_operators("application", {"partner": partner.id})
    return partner


def apply_or_notify(application: Application) -> tuple[User, Partner | None]:
    """Register the applicant; or, when the address already has an account, register nothing.

    The caller answers both alike and e-mails the address (``send_application_mail``), so
    the form never tells a visitor which addresses have accounts."""
    existing = find_user_by_email(application.email)
    if existing is None:
        partner = apply_as_partner(application)
        return partner.user, partner
    # The same checks and the same hashing work as a new account: no answer or timing tells.
    _checked_website(application.website)
    check_password_strength(application.password, email=application.email, name=application.name)
    generate_password_hash(application.password)
    record_event(None, "user.applied_again", "user", existing.id)
    return existing, None


def send_application_mail(user: User, partner: Partner | None, links: dict[str, str]) -> None:
    """Confirm a new application, or tell an existing account that someone applied with its address."""
    existing = partner is None
    # A new applicant reads the language they applied in; an existing account its own choice.
    with speaking_to(user) if existing and user.locale else nullcontext():
        if existing:
            subject = _("Someone applied with your e-mail address")
            template = "email/application_existing.txt"
        else:
            subject = _("Your partner application is in")
            template = "email/application_received.txt"
        text = render_template(template, user=user, **links)
    send_mail(user.email, subject, text)


_ALLOWED = {
    "approve": ({PartnerStatus.APPLIED, PartnerStatus.REJECTED}, PartnerStatus.APPROVED),
    "reject": ({PartnerStatus.APPLIED}, PartnerStatus.REJECTED),
    "suspend": ({PartnerStatus.APPROVED}, PartnerStatus.SUSPENDED),
    "reinstate": ({PartnerStatus.SUSPENDED}, PartnerStatus.APPROVED),
}


def _transition(partner: Partner, actor: User, verb: str, reason: str | None) -> Partner:
    sources, target = _ALLOWED[verb]
    if partner.status not in sources:
        raise InvalidTransition(
            _(
                "A partner who is %(status)s cannot be changed this way.",
                status=partner_status_label(partner.status),
            )
        )
    previous = partner.status
    partner.status = target
    partner.status_reason = (reason or "").strip() or None
    partner.status_changed_at = utcnow()
    partner.status_changed_by_id = actor.id
    record_event(
        actor, f"partner.{verb}", "partner", partner.id, previous=previous, reason=partner.status_reason
    )
    db.session.flush()
    realtime.notify_operators("partner", {"partner": partner.id, "status": target})
    return partner


def approve_partner(partner: Partner, actor: User) -> Partner:
    _transition(partner, actor, "approve", None)
    events.record(
        "partner.approved", {"partner_id": partner.id, "ref_code": partner.ref_code}, partner_id=partner.id
    )
    return partner


def reject_partner(partner: Partner, actor: User, reason: str) -> Partner:
    if not (reason or "").strip():
        raise InvalidTransition(_("Say why, so the applicant knows."), "reason")
    return _transition(partner, actor, "reject", reason)


def suspend_partner(partner: Partner, actor: User, reason: str) -> Partner:
    """Suspended partners keep their history but their links stop attributing."""
    if not (reason or "").strip():
        raise InvalidTransition(_("Say why, so the partner knows."), "reason")
    from portal.services import payouts

    _transition(partner, actor, "suspend", reason)
    events.record(
        "partner.suspended",
        {"partner_id": partner.id, "ref_code": partner.ref_code, "reason": partner.status_reason},
        partner_id=partner.id,
    )
    payouts.hold_for_suspension(partner, actor)
    return partner


def reinstate_partner(partner: Partner, actor: User) -> Partner:
    """Active again: items held for the suspension in open batches are released (see payouts)."""
    from portal.services import payouts
    from portal.services.program import get_program

    _transition(partner, actor, "reinstate", None)
    payouts.release_suspension_holds(partner, actor, get_program())
    return partner


def partner_status_label(status: str) -> str:
    return {
        PartnerStatus.APPLIED: _("waiting for review"),
        PartnerStatus.APPROVED: _("approved"),
        PartnerStatus.REJECTED: _("not accepted"),
        PartnerStatus.SUSPENDED: _("suspended"),
    }.get(status, status)


def authenticate(email: str, password: str, ip: str | None = None) -> User | None:
    """The active user with this e-mail and password, or None (same answer for every failure)."""
    user = find_user_by_email(email)
    if user is None:
        # Spend the same time as a real check so timing does not reveal accounts.
        check_password_hash(_dummy_hash(), password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    user.last_login_at = utcnow()
    if ip is not None:
        from portal.services.clicks import hash_ip

        user.last_login_ip_hash = hash_ip(ip)
    db.session.flush()
    return user


@cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


# --- sessions and password change ---------------------------------------------


def end_sessions(user: User) -> None:
    """Sign ``user`` out of every browser: each session and remember-me cookie carries the
    current session token (Flask-Login's ``get_id``), and the user loader accepts no other."""
    user.rotate_session_token()
    db.session.flush()


def sign_out_everywhere(user: User) -> None:
    end_sessions(user)
    record_event(user, "user.signed_out_everywhere", "user", user.id)


def change_password(user: User, current_password: str, new_password: str) -> User:
    """Set a new password after checking the current one; every other session ends."""
    if not user.check_password(current_password):
        raise InvalidCredentials(_("That is not your current password."), "current_password")
    check_password_strength(new_password, email=user.email, name=user.name)
    user.set_password(new_password)  # rotates the session token
    record_event(user, "user.password_changed", "user", user.id)
    db.session.flush()
    return user


# --- password reset ---------------------------------------------------------


def _reset_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="password-reset")


def _password_fingerprint(user: User) -> str:
    # Part of the token: once the password changes, earlier tokens stop working.
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def make_password_reset_token(user: User, purpose: str = "reset") -> str:
    """A signed single-use link token; ``purpose`` is "reset" or "invite" (they expire differently)."""
    return _reset_serializer().dumps([user.id, _password_fingerprint(user), purpose])


def _max_age(purpose: str) -> int:
    config = current_app.config
    return config["INVITATION_MAX_AGE"] if purpose == "invite" else config["PASSWORD_RESET_MAX_AGE"]


def user_for_reset_token(token: str) -> User:
    """The user a valid, unexpired, unused token belongs to; InvalidToken otherwise."""
    try:
        # The age is checked below, once the token says what it is for.
        payload, signed_at = _reset_serializer().loads(token, return_timestamp=True)
        user_id, fingerprint, purpose = payload
    except (BadSignature, ValueError, TypeError) as exc:
        raise InvalidToken(_("This reset link is not valid. Ask for a new one.")) from exc
    if purpose not in ("reset", "invite"):
        raise InvalidToken(_("This reset link is not valid. Ask for a new one."))
    if utcnow() - signed_at > timedelta(seconds=_max_age(purpose)):
        if purpose == "invite":
            raise InvalidToken(
                _("This invitation has expired. Ask the person who invited you for a new one.")
            )
        raise InvalidToken(_("This reset link has expired. Ask for a new one."))
    user = db.session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None or not user.active or fingerprint != _password_fingerprint(user):
        raise InvalidToken(_("This reset link has already been used. Ask for a new one."))
    return user


def reset_password(token: str, new_password: str) -> User:
    user = user_for_reset_token(token)
    check_password_strength(new_password, email=user.email, name=user.name)
    user.set_password(new_password)
    record_event(user, "user.password_reset", "user", user.id)
    db.session.flush()
    return user


def send_password_reset(email: str, link_for: Callable[[str], str]) -> bool:
    """E-mail a reset link if an active account has this address; says nothing either way."""
    user = find_user_by_email(email)
    if user is None or not user.active:
        return False
    link = link_for(make_password_reset_token(user))
    minutes = current_app.config["PASSWORD_RESET_MAX_AGE"] // 60
    # In the account's own language if it chose one, else the one the request is read in.
    with speaking_to(user) if user.locale else nullcontext():
        subject = _("Reset your partner portal password")
        text = render_template("email/password_reset.txt", user=user, link=link, minutes=minutes)
    # After the commit and off the request: a known address is answered as fast as an unknown one.
    delivery.send_after_commit(user.email, subject, text)
    record_event(user, "user.password_reset_requested", "user", user.id)
    return True


def invite_operator(actor: User, email: str, name: str, role: Role, link_for: Callable[[str], str]) -> User:
    """Add a manager or admin; they choose their own password from an e-mailed link."""
    if role not in (Role.MANAGER, Role.ADMIN):
        raise InvalidTransition(_("Team members are managers or admins."), "role")
    _ensure_email_free(email)
    user = User(email=normalise_email(email), name=name.strip(), role=role)
    # Nobody knows this password; the invitation link replaces it.
    user.set_password(secrets.token_urlsafe(32))
    db.session.add(user)
    db.session.flush()
    record_event(actor, "user.invited", "user", user.id, role=str(role))
    link = link_for(make_password_reset_token(user, purpose="invite"))
    # The invited person has chosen nothing yet: the program's default language.
    with speaking_to(user):
        subject = _("You have been invited to the partner portal")
        text = render_template(
            "email/invitation.txt",
            user=user,
            inviter=actor,
            link=link,
            days=max(1, current_app.config["INVITATION_MAX_AGE"] // 86400),
        )
    send_mail(user.email, subject, text)
    return user


def set_user_active(actor: User, user: User, active: bool) -> User:
    """Switch an operator's access on or off; nobody locks out themselves or the last admin."""
    if user.id == actor.id:
        raise InvalidTransition(_("You cannot switch off your own access."))
    if not active and user.role == Role.ADMIN:
        admins = db.session.scalar(
            sa.select(sa.func.count()).where(User.role == Role.ADMIN, User.active.is_(True))
        )
        if admins <= 1:
            raise InvalidTransition(_("Keep at least one active admin."))
    user.active = active
    if not active:
        end_sessions(user)
    record_event(actor, "user.activated" if active else "user.deactivated", "user", user.id)
    db.session.flush()
    return user
