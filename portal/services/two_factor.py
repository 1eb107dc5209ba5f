"""Two-factor sign-in: TOTP (RFC 6238) enrolment, codes, one-time recovery codes, the team rule."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import sqlalchemy as sa
from flask_babel import gettext as _

from portal.errors import DomainError
from portal.extensions import db
from portal.models import AuditEvent, Program, RecoveryCode, User
from portal.models.types import utcnow
from portal.services.audit import record_event

RECOVERY_CODE_COUNT = 10
# Codes of the step before and after the current one still count: phone clocks drift.
VALID_WINDOW = 1
# Wrong codes per account within the lock window before sign-in with a code pauses; the
# address-based limit (LOGIN_RATE_LIMIT) alone would let many addresses guess one account.
MAX_FAILURES = 5
LOCK_WINDOW = timedelta(minutes=15)
# No look-alike characters: people type these from paper.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_GROUPS = 4  # xxxx-xxxx-xxxx-xxxx: 16 characters, about 79 bits


class InvalidCode(DomainError):
    code = "invalid_code"


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def _digits(code: str) -> str:
    return "".join(ch for ch in code if not ch.isspace())


def _now(now: datetime | None) -> datetime:
    return now or utcnow()


# --- enrolment --------------------------------------------------------------------------


def start_enrolment(user: User) -> str:
    """Give ``user`` a new secret waiting for its first code; an enrolled user must disable first."""
    if user.two_factor_enabled:
        raise InvalidCode(_("Two-factor sign-in is already on."))
    user.totp_secret = pyotp.random_base32()
    user.last_totp_step = None
    db.session.flush()
    return user.totp_secret


def provisioning_uri(user: User, issuer: str) -> str:
    """The otpauth:// address an authenticator app reads from the QR code."""
    if not user.totp_secret:
        raise InvalidCode(_("Start the set-up first."))
    return _totp(user.totp_secret).provisioning_uri(name=user.email, issuer_name=issuer)


def confirm_enrolment(user: User, code: str, now: datetime | None = None) -> list[str]:
    """Switch two-factor sign-in on once the app shows a right code; returns the recovery codes."""
    if user.two_factor_enabled:
        raise InvalidCode(_("Two-factor sign-in is already on."))
    if not user.totp_secret:
        raise InvalidCode(_("Start the set-up first."))
    if not _use_totp(user, code, _now(now)):
        raise InvalidCode(
            _("That code does not match. Check the time on your phone and type the newest code."), "code"
        )
    user.totp_enabled_at = _now(now)
    codes = _replace_recovery_codes(user, _now(now))
    record_event(user, "user.2fa_enabled", "user", user.id)
    db.session.flush()
    return codes


def disable(user: User, password: str, code: str, now: datetime | None = None) -> None:
    """Switch two-factor sign-in off; asks for the password and a code, as a thief has neither."""
    if not user.two_factor_enabled:
        raise InvalidCode(_("Two-factor sign-in is not on."))
    if not user.check_password(password):
        raise InvalidCode(_("That is not your current password."), "password")
    if verify(user, code, now).method is None:
        raise InvalidCode(_("That code does not match."), "code")
    user.totp_secret = None
    user.totp_enabled_at = None
    user.last_totp_step = None
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    record_event(user, "user.2fa_disabled", "user", user.id)
    db.session.flush()


def reset(user: User, actor: User | None = None) -> None:
    """Switch two-factor sign-in off for someone who lost both phone and recovery codes
    (the command line's ``reset-two-factor``); their sessions end too."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.last_totp_step = None
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    user.rotate_session_token()
    record_event(actor, "user.2fa_reset", "user", user.id)
    db.session.flush()


def regenerate_recovery_codes(user: User, code: str, now: datetime | None = None) -> list[str]:
    """Ten new recovery codes (the old ones stop working), after a right code; a wrong one
    counts towards the pause like one at sign-in (the caller commits either way)."""
    if not user.two_factor_enabled:
        raise InvalidCode(_("Two-factor sign-in is not on."))
    if verify(user, code, now).method is None:
        raise InvalidCode(_("That code does not match."), "code")
    codes = _replace_recovery_codes(user, _now(now))
    record_event(user, "user.2fa_recovery_codes_replaced", "user", user.id)
    db.session.flush()
    return codes


def recovery_codes_left(user: User) -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )


# --- sign-in ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """What a second-factor check found: ``method`` is "totp", "recovery" or None (refused)."""

    method: str | None
    locked: bool = False
    tries_left: int = MAX_FAILURES


def failures_in_window(user: User, now: datetime | None = None) -> int:
    since = _now(now) - LOCK_WINDOW
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.action == "user.2fa_failed",
            AuditEvent.subject_type == "user",
            AuditEvent.subject_id == user.id,
            AuditEvent.created_at >= since,
        )
    )


def verify(user: User, code: str, now: datetime | None = None) -> Verification:
    """Check a code from the app or a recovery code, and record the outcome in the audit log.

    Every answer is recorded (the view commits it even when it refuses the sign-in), so
    wrong codes are counted per account and pause sign-in after ``MAX_FAILURES``.
    """
    now = _now(now)
    failures = failures_in_window(user, now)
    if failures >= MAX_FAILURES:
        return Verification(None, locked=True, tries_left=0)
    method = None
    if user.two_factor_enabled:
        if _use_totp(user, code, now):
            method = "totp"
        elif _use_recovery_code(user, code, now):
            method = "recovery"
    if method is None:
        record_event(user, "user.2fa_failed", "user", user.id)
        db.session.flush()
        left = MAX_FAILURES - failures - 1
        return Verification(None, locked=left <= 0, tries_left=max(left, 0))
    if method == "recovery":
        record_event(user, "user.2fa_recovery_code_used", "user", user.id, left=recovery_codes_left(user))
    record_event(user, "user.2fa_succeeded", "user", user.id, method=method)
    db.session.flush()
    return Verification(method)


def _use_totp(user: User, code: str, now: datetime) -> bool:
    """Whether ``code`` is the TOTP of a step near ``now`` newer than the last one used.

    The step is claimed with one conditional UPDATE, so the same code sent twice (even at
    once, from two workers) signs in once.
    """
    code = _digits(code)
    if not user.totp_secret or len(code) != 6 or not code.isdigit():
        return False
    totp = _totp(user.totp_secret)
    current = totp.timecode(now)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            claimed = db.session.execute(
                sa.update(User)
                .where(
                    User.id == user.id,
                    sa.or_(User.last_totp_step.is_(None), User.last_totp_step < step),
                )
                .values(last_totp_step=step)
                .execution_options(synchronize_session=False)
            ).rowcount
            # The row changed behind the ORM's back: read the step afresh next time.
            db.session.expire(user, ["last_totp_step"])
            return bool(claimed)
    return False


def _normalise_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def _hash_recovery_code(user_id: int, code: str) -> str:
    # The codes carry ~79 random bits, so a fast hash is enough; the user id keeps equal
    # codes of two accounts apart.
    return hashlib.sha256(f"{user_id}:{_normalise_recovery_code(code)}".encode()).hexdigest()


def _use_recovery_code(user: User, code: str, now: datetime) -> bool:
    normalised = _normalise_recovery_code(code)
    if len(normalised) != 4 * _RECOVERY_GROUPS:
        return False
    used = db.session.execute(
        sa.update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _hash_recovery_code(user.id, normalised),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return bool(used)


def _new_recovery_code() -> str:
    groups = ("".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(4)) for _ in range(_RECOVERY_GROUPS))
    return "-".join(groups)


def _replace_recovery_codes(user: User, now: datetime) -> list[str]:
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    db.session.add_all(
        RecoveryCode(user_id=user.id, code_hash=_hash_recovery_code(user.id, code), created_at=now)
        for code in codes
    )
    return codes


# --- the team rule ----------------------------------------------------------------------


def must_enrol(user: User, program: Program) -> bool:
    """Whether ``user`` must set up two-factor sign-in before using the console."""
    return user.is_operator and program.require_team_2fa and not user.two_factor_enabled
