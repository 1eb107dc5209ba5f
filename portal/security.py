"""Sign-in wiring and the access decorators every protected view uses."""

from __future__ import annotations

from functools import wraps

import sqlalchemy as sa
from flask import Flask, abort, redirect, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user

from portal import urlcheck
from portal.extensions import db
from portal.models import PartnerStatus, Role, User


def configure_login(app: Flask, login_manager: LoginManager) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please sign in to see that page.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(session_token: str) -> User | None:
        return db.session.scalars(
            sa.select(User).where(User.session_token == session_token, User.active.is_(True))
        ).first()


def roles_required(*roles: Role):
    """Only signed-in users with one of ``roles`` may use the view; others get 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                from portal.extensions import login_manager

                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = frozenset(roles)
        return wrapped

    return decorator


operator_required = roles_required(Role.MANAGER, Role.ADMIN)
admin_required = roles_required(Role.ADMIN)


def partner_required(view):
    """Partners whose account is approved (or suspended) may use the portal pages."""

    @wraps(view)
    @roles_required(Role.PARTNER)
    def wrapped(*args, **kwargs):
        partner = current_user.partner
        if partner is None or not partner.can_use_portal:
            return redirect(url_for("auth.application_status"))
        return view(*args, **kwargs)

    return wrapped


def home_url_for(user: User) -> str:
    """Where a user lands after signing in."""
    if user.is_operator:
        return url_for("admin.dashboard")
    if user.partner is not None and user.partner.status in (
        PartnerStatus.APPROVED,
        PartnerStatus.SUSPENDED,
    ):
        return url_for("partner.dashboard")
    return url_for("auth.application_status")


def safe_next_url(target: str | None) -> str | None:
    """Only same-site relative paths are followed after sign-in (no open redirect):
    ``portal.urlcheck.safe_next`` decides (it refuses control characters such as CR/LF,
    which could split the Location header, and backslashes)."""
    return urlcheck.safe_next(target)


def client_ip() -> str:
    return request.remote_addr or "unknown"
