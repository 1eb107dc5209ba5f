"""Partner pages."""

from __future__ import annotations

from flask import render_template
from flask_login import current_user

from portal.blueprints.partner import bp
from portal.security import partner_required
from portal.services.program import get_program


@bp.get("/")
@partner_required
def dashboard():
    partner = current_user.partner
    return render_template("partner/dashboard.html", partner=partner, program=get_program())
