"""The click redirect ``/go/<code>``: the hot path of the money path."""

from flask import Blueprint
from werkzeug.routing import PathConverter

bp = Blueprint("track", __name__)


# Whatever follows /go/, slashes included, so a mangled link still reaches the redirect;
# control characters excepted (a NUL cannot even be looked up in PostgreSQL): 404.
CODE_PATTERN = "[^\\x00-\\x1f\\x7f]+"


class AnyCodeConverter(PathConverter):
    """``CODE_PATTERN`` as a route converter."""

    regex = CODE_PATTERN + "?"
    part_isolating = False


# Runs before the routes below are added, so the converter exists when they are.
bp.record_once(lambda state: state.app.url_map.converters.setdefault("anycode", AnyCodeConverter))

from portal.blueprints.track import routes  # noqa: E402,F401
