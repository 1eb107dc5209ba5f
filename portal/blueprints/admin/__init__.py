"""The operator console. Every route carries a role check."""

from flask import Blueprint, flash, redirect, url_for
from flask_babel import gettext as _
from flask_login import current_user

bp = Blueprint("admin", __name__)


@bp.before_request
def require_two_factor_when_the_program_does():
    """With "Two-factor sign-in required for the team" on, the console waits for enrolment."""
    if not current_user.is_authenticated or not current_user.is_operator or current_user.two_factor_enabled:
        return None
    from portal.services.program import get_program
    from portal.services.two_factor import must_enrol

    if must_enrol(current_user, get_program()):
        flash(_("Your program requires two-factor sign-in for the team. Set it up to continue."), "info")
        return redirect(url_for("auth.account"))
    return None


from portal.blueprints.admin import (  # noqa: E402,F401
    announcements,
    automatic_messages,
    campaign_requests,
    conversions,
    coupons,
    creatives,
    dashboard,
    inbox,
    outbox,
    partners,
    payouts,
    qr,
    rates,
    rewards,
    settings,
    webhooks,
)
