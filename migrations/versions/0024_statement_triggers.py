"""PostgreSQL: the sale's events and the partner trend's touch once a statement, not once a row

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04 11:20:00

The outbox events of new conversions and commission lines (0017, 0020) and the partner
trend's version (0014) were written by row triggers: a PL/pgSQL call and an INSERT of its
own for every row. The conversion API writes a batch of sales in one INSERT of conversions,
one of lines and one of rollups, so those calls were most of what PostgreSQL did for a
sale beyond storing it. Here each becomes a statement trigger over the statement's
transition table (``REFERENCING NEW TABLE``): one INSERT … SELECT for all the rows,
in the order of their ids (the order the row triggers wrote them in). What they write is
the same but for the trend's ``version``, which counts statements now rather than rows:
it only ever says "changed since" (``dashboards._remember`` compares it), never how much.

A transition table belongs to one event, so the trend has two triggers (INSERT, UPDATE;
``INSERT … ON CONFLICT DO UPDATE`` fires both, each with its own rows). SQLite has no
statement triggers: its row triggers stay as they are.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def _conversion_event(row: str) -> tuple[str, str]:
    kind = (
        f"CASE {row}.status WHEN 'review' THEN 'conversion.flagged' WHEN 'rejected' THEN "
        f"'conversion.rejected' WHEN 'held' THEN 'conversion.held' ELSE 'conversion.created' END"
    )
    data = (
        f"json_build_object('conversion_id', {row}.id, 'transaction_id', {row}.transaction_id, "
        f"'amount_minor', {row}.amount_minor, 'currency', {row}.currency, 'partner_id', {row}.partner_id, "
        f"'status', {row}.status, 'reason', COALESCE({row}.rejection_reason, {row}.flagged_reason), "
        f"'original_amount_minor', {row}.original_amount_minor, 'original_currency', {row}.original_currency)"
    )
    return kind, data


def _commission_event(row: str) -> tuple[str, str]:
    kind = (
        f"CASE WHEN {row}.kind IN ('reversal', 'clawback') THEN 'commission.reversed' "
        "ELSE 'commission.created' END"
    )
    data = (
        f"json_build_object('commission_id', {row}.id, 'conversion_id', {row}.conversion_id, "
        f"'partner_id', {row}.partner_id, 'kind', {row}.kind, 'amount_minor', {row}.amount_minor, "
        f"'currency', {row}.currency, 'status', {row}.status, 'reason', {row}.reason_code)"
    )
    return kind, data


_EVENTS = {"conversions": _conversion_event, "commissions": _commission_event}

_TREND_ROWS = """
    INSERT INTO stats_partner_trends (partner_id, version)
    SELECT DISTINCT partner_id, 1 FROM new_rows ORDER BY partner_id
    ON CONFLICT (partner_id) DO UPDATE SET version = stats_partner_trends.version + 1;"""
_TREND_ROW = """
    INSERT INTO stats_partner_trends (partner_id, version) VALUES (NEW.partner_id, 1)
    ON CONFLICT (partner_id) DO UPDATE SET version = stats_partner_trends.version + 1;"""


def _function(name: str, body: str) -> None:
    op.execute(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\n    RETURN NULL;\nEND\n$$"
    )


def _outbox_triggers(per_statement: bool) -> None:
    """The sale's outbox triggers on conversions and commissions, once a statement (over its
    transition table, rows in id order) or once a row."""
    for table, event in _EVENTS.items():
        kind, data = event("r" if per_statement else "NEW")
        if per_statement:
            insert = f"SELECT {kind}, r.partner_id, {data}, r.created_at FROM new_rows AS r ORDER BY r.id"
            fires = "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        else:
            insert = f"VALUES ({kind}, NEW.partner_id, {data}, NEW.created_at)"
            fires = "FOR EACH ROW"
        op.execute(f"DROP TRIGGER outbox_{table}_insert ON {table}")
        _function(
            f"outbox_{table}_insert",
            f"    INSERT INTO outbox_events (type, partner_id, data, created_at)\n    {insert};",
        )
        op.execute(
            f"CREATE TRIGGER outbox_{table}_insert AFTER INSERT ON {table} "
            f"{fires} EXECUTE FUNCTION outbox_{table}_insert()"
        )


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    _outbox_triggers(per_statement=True)
    op.execute("DROP TRIGGER stats_daily_touch_trend ON stats_daily")
    _function("stats_daily_touch_trend", _TREND_ROWS)
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER stats_daily_touch_trend_{event.lower()} AFTER {event} ON stats_daily "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_daily_touch_trend()"
        )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    _outbox_triggers(per_statement=False)
    for event in ("insert", "update"):
        op.execute(f"DROP TRIGGER stats_daily_touch_trend_{event} ON stats_daily")
    _function("stats_daily_touch_trend", _TREND_ROW)
    op.execute(
        "CREATE TRIGGER stats_daily_touch_trend AFTER INSERT OR UPDATE ON stats_daily "
        "FOR EACH ROW EXECUTE FUNCTION stats_daily_touch_trend()"
    )
