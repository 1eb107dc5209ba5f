"""tier counters: sales held for review per partner-day; the partner trend touched by the database

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 06:30:00

The rewards engine reads a partner's tier metrics from ``stats_partner_daily`` (bounded by
the days of a window, never by the partner's history) and needs the revenue of the
conversions that count: ``sales_minor`` less what is held for review. Existing review
conversions are counted into the new column here.

Every write to the finest rollup grain (``stats_daily``) marks the partner's cached 30-day
trend stale (``stats_partner_trends.version`` + 1) by trigger: the statement the services
sent after every event is now done by the database in the same transaction.

"""
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER stats_daily_touch_trend_{event.lower()} AFTER {event} ON stats_daily
    BEGIN
        INSERT INTO stats_partner_trends (partner_id, version) VALUES (NEW.partner_id, 1)
        ON CONFLICT (partner_id) DO UPDATE SET version = stats_partner_trends.version + 1;
    END
    """
    for event in ("INSERT", "UPDATE")
]
_POSTGRES_FUNCTION = """
CREATE FUNCTION stats_daily_touch_trend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_partner_trends (partner_id, version) VALUES (NEW.partner_id, 1)
    ON CONFLICT (partner_id) DO UPDATE SET version = stats_partner_trends.version + 1;
    RETURN NULL;
END
$$
"""
_POSTGRES_TRIGGER = """
CREATE TRIGGER stats_daily_touch_trend AFTER INSERT OR UPDATE ON stats_daily
FOR EACH ROW EXECUTE FUNCTION stats_daily_touch_trend()
"""


def upgrade():
    with op.batch_alter_table('stats_partner_daily', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('sales_review_minor', sa.BigInteger(), server_default='0', nullable=False)
        )

    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute(_POSTGRES_FUNCTION)
        op.execute(_POSTGRES_TRIGGER)
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)

    # Conversions held for review now: their sales, on the day they occurred (program's zone).
    timezone = bind.execute(sa.text("SELECT timezone FROM programs ORDER BY id LIMIT 1")).scalar() or "UTC"
    zone = ZoneInfo(timezone)
    totals = {}
    for partner_id, occurred_at, amount, refunded in bind.execute(
        sa.text(
            "SELECT partner_id, occurred_at, amount_minor, refunded_minor FROM conversions "
            "WHERE status = 'review' AND partner_id IS NOT NULL"
        )
    ):
        occurred_at = _aware(occurred_at)
        key = (partner_id, occurred_at.astimezone(zone).date())
        totals[key] = totals.get(key, 0) + amount - refunded
    for (partner_id, day), total in sorted(totals.items()):
        bind.execute(
            sa.text(
                "UPDATE stats_partner_daily SET sales_review_minor = :total "
                "WHERE partner_id = :partner_id AND day = :day"
            ),
            {"total": total, "partner_id": partner_id, "day": day},
        )


def _aware(value):
    """A stored UTC timestamp as an aware datetime (SQLite hands back naive text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS stats_daily_touch_trend ON stats_daily")
        op.execute("DROP FUNCTION IF EXISTS stats_daily_touch_trend()")
    else:
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS stats_daily_touch_trend_{event}")
    with op.batch_alter_table('stats_partner_daily', schema=None) as batch_op:
        batch_op.drop_column('sales_review_minor')
