"""The partner portal. Every query here is scoped to the signed-in partner."""

from flask import Blueprint

bp = Blueprint("partner", __name__)

from portal.blueprints.partner import qr, routes  # noqa: E402,F401
