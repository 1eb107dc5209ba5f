"""Asking again who is there, before a change a stolen session must not make."""

from __future__ import annotations

from flask_babel import gettext as _

from portal.errors import DomainError
from portal.models import User


def confirm_identity(user: User, password: str | None, code: str | None = None) -> None:
    """Ask again who is there before a change a stolen session must not make (payout details):
    the current password, and the code of the second factor once one is enrolled (a failed
    code counts towards the account's pause, as at sign-in)."""
    if not password:
        raise DomainError(_("Enter your current password to make this change."), "current_password")
    if not user.check_password(password):
        raise DomainError(_("That is not your current password."), "current_password")
    if user.two_factor_enabled:
        from portal.services import two_factor

        if not (code or "").strip():
            raise DomainError(_("Enter the code from your authenticator app."), "code")
        if two_factor.verify(user, code).method is None:
            raise DomainError(_("That code does not match."), "code")
