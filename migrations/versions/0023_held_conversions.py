"""tier counters: sales waiting for their exchange rate per partner-day

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03 22:30:00

A sale in another currency without a rate is stored ``held`` until one arrives. The partner
day counters (``stats_partner_daily``) counted it among the accepted conversions, so a held
sale lifted its partner towards a tier before it was accepted (it may never be: refunded in
full meanwhile, or above the maximum sale once converted), and counted a second time when
its rate arrived. ``conversions_held`` says how many of the day's ``conversions`` wait for a
rate; the rewards engine leaves them out as it leaves out those under review. Their sales
need no column: a held sale's ``amount_minor`` is 0 until it is converted.

Existing held sales are counted into the new column here, on the day they occurred in the
program's time zone (the day the rollups counted them on), as 0014 does for sales under
review. A day row that is missing (rollups not rebuilt since 0006) stays missing:
``flask portal rebuild-rollups`` recounts everything, the new column with it.

Both databases add and drop the column in place (SQLite >= 3.35's ``DROP COLUMN``: no table
rebuild). The table has no triggers or constraints that name the column.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "stats_partner_daily",
        sa.Column("conversions_held", sa.Integer(), server_default="0", nullable=False),
    )

    # Sales held for a rate now: how many, on the day they occurred (program's zone).
    bind = op.get_bind()
    timezone = bind.execute(sa.text("SELECT timezone FROM programs ORDER BY id LIMIT 1")).scalar() or "UTC"
    zone = ZoneInfo(timezone)
    counts = {}
    for partner_id, occurred_at in bind.execute(
        sa.text(
            "SELECT partner_id, occurred_at FROM conversions "
            "WHERE status = 'held' AND partner_id IS NOT NULL"
        )
    ):
        key = (partner_id, _aware(occurred_at).astimezone(zone).date())
        counts[key] = counts.get(key, 0) + 1
    for (partner_id, day), count in sorted(counts.items()):
        bind.execute(
            sa.text(
                "UPDATE stats_partner_daily SET conversions_held = :count "
                "WHERE partner_id = :partner_id AND day = :day"
            ),
            {"count": count, "partner_id": partner_id, "day": day},
        )


def _aware(value):
    """A stored UTC timestamp as an aware datetime (SQLite hands back naive text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def downgrade():
    op.drop_column("stats_partner_daily", "conversions_held")
