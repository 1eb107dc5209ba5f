"""The operator console. Every route carries a role check."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from portal.blueprints.admin import campaign_requests, outbox, rewards, routes  # noqa: E402,F401
