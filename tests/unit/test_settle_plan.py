"""The PostgreSQL settlement statement's plan (issue #20): the unpaid lines are read once, and
joined to the items by hash whatever the planner estimates.

Not a timed test: the plan is what made settlement slow (a nested loop per item and per line
when the items were estimated at one row; minutes with payout_lines' statistics from a
rolled-back batch), so the plan is what is pinned.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from portal.extensions import db as _db
from portal.services.payouts import PayoutDetails, save_payout_account, settle
from tests.factories import PartnerFactory, ProgramFactory, earn

pytestmark = pytest.mark.postgres_only


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_settlement_reads_the_unpaid_lines_once_and_never_joins_them_in_a_nested_loop(db, database_backend):
    program = ProgramFactory(
        currency="USD", timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=100
    )
    for _ in range(3):
        partner = PartnerFactory()
        save_payout_account(
            partner, PayoutDetails(method="paypal", paypal_email=f"p{partner.id}@example.org"), partner.user
        )
        for days in (3, 4, 5):
            earn(partner, 2000, at=datetime(2026, 11, 15, tzinfo=UTC) - timedelta(days=days))
    db.session.flush()
    # Statistics that make the planner guess one unpaid line (it cannot know): analysed now.
    db.session.execute(sa.text("ANALYZE payout_lines"))
    db.session.execute(sa.text("ANALYZE commissions"))

    plans = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if "made_items" in statement and not statement.startswith("EXPLAIN"):
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plans.append(cursor.fetchone()[0])

    sa.event.listen(_db.engine, "before_cursor_execute", explain)
    try:
        batch, created = settle(program, date(2026, 11, 20))
    finally:
        sa.event.remove(_db.engine, "before_cursor_execute", explain)

    assert created and len(batch.items) == 3
    assert len(plans) == 1
    plan = plans[0] if isinstance(plans[0], list) else json.loads(plans[0])
    nodes = list(_nodes(plan[0]["Plan"]))
    assert not [n for n in nodes if n["Node Type"] == "Nested Loop"]
    scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "commissions"]
    assert len(scans) == 1  # the lines are read once, for the items and for their rows
    # and the settings are the session's own again afterwards
    assert db.session.scalar(sa.text("SELECT current_setting('enable_nestloop')")) == "on"
