"""Operator console: the program dashboard and its CSV exports."""

from __future__ import annotations

from flask import Response

from portal.blueprints.admin import bp
from portal.security import operator_required
from portal.services import dashboards, partners
from portal.services.program import get_program
from portal.views import committing, dashboard_range, render_page_or_partial


@bp.get("/")
@operator_required
def dashboard():
    program = get_program()
    form, rng, today = dashboard_range(program)
    with committing():  # keeps the partner trends it recounted (a cache), before rendering
        board = dashboards.program_dashboard(rng, today, program.timezone)
    return render_page_or_partial(
        "admin/dashboard.html",
        "admin/_partials/_dashboard.html",
        program=program,
        form=form,
        counts=partners.count_by_status(),
        needs_setup=not program.default_landing_url,
        board=board,
    )


@bp.get(f"/stats/<any({', '.join(dashboards.PROGRAM_TABLES)}):table>.csv")
@operator_required
def export_stats(table: str):
    program = get_program()
    _form, rng, today = dashboard_range(program)
    with committing():  # the partner trends it may have recounted
        headers, rows = dashboards.program_table(rng, today, program.timezone, table, program.currency)
    name = f"{table}-{rng.start.isoformat()}-{rng.end.isoformat()}.csv"
    return Response(
        dashboards.to_csv(headers, rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
