"""The click redirect ``/go/<code>``: the hot path of the money path."""

from flask import Blueprint

bp = Blueprint("track", __name__)

from portal.blueprints.track import routes  # noqa: E402,F401
