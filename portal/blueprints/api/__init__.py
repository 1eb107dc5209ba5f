"""JSON tracking API v1 for the brand's servers, authenticated by API key."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from portal.blueprints.api import routes  # noqa: E402,F401
