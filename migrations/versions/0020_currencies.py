"""currencies: exchange rates; sales in another currency, converted or held for a rate

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 18:00:00

A sale in another currency than the program's keeps what the shop sent
(``original_amount_minor``, ``original_currency``, ``original_refunded_minor``) and the
rate it was converted at (``fx_rate``, ``fx_rate_day``, ``fx_source``); while no rate is
known it is ``held`` with ``amount_minor`` 0.

The ledger trigger on ``conversions`` is rewritten: the amount and currency still never
change, except once, when a waiting sale is converted (``original_currency`` set and
``fx_rate`` still NULL); the original amount and currency never change; a rate once set
never changes; the original's refunds only grow. The outbox trigger writes
``conversion.held`` for a held sale and carries the original amount and currency.

SQLite: the status CHECK is widened and the new CHECK added by editing the table's SQL, as
0018 did (a rebuild would drop the triggers and run ON DELETE actions); nothing on disk
changes, every existing row has ``original_currency`` NULL.
"""
from alembic import op
import sqlalchemy as sa
import portal.models.types


# revision identifiers, used by Alembic.
revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

_OLD_STATUS = "status IN ('pending', 'review', 'rejected')"
_NEW_STATUS = "status IN ('pending', 'review', 'rejected', 'held')"
_WAITING = "original_currency IS NOT NULL AND fx_rate IS NULL"
_CONVERTED = "original_currency IS NULL OR fx_rate IS NOT NULL OR status IN ('held', 'rejected')"


def _changed(*columns: str) -> str:
    return " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in columns)


_OLD_LEDGER = (
    _changed("amount_minor", "currency", "transaction_id")
    + " OR NEW.refunded_minor < OLD.refunded_minor"
    + " OR (OLD.status = 'rejected' AND NEW.status <> 'rejected')"
)
_OLD_LEDGER_MESSAGE = (
    "a conversion's amount, currency and transaction id never change, its refunds only grow, "
    "and a rejected conversion stays rejected"
)
_NEW_LEDGER = (
    _changed("transaction_id", "original_amount_minor", "original_currency")
    + " OR ((" + _changed("amount_minor", "currency") + ")"
    + " AND NOT (OLD.original_currency IS NOT NULL AND OLD.fx_rate IS NULL))"
    + " OR (OLD.fx_rate IS NOT NULL AND (" + _changed("fx_rate", "fx_rate_day", "fx_source") + "))"
    + " OR NEW.refunded_minor < OLD.refunded_minor"
    + " OR NEW.original_refunded_minor < OLD.original_refunded_minor"
    + " OR (OLD.status = 'rejected' AND NEW.status <> 'rejected')"
)
_NEW_LEDGER_MESSAGE = (
    "a conversion's amount, currency and transaction id never change (a sale in another currency "
    "is converted once, at one rate), its refunds only grow, and a rejected conversion stays rejected"
)


def _json(pairs: dict[str, str]) -> str:
    function = "json_build_object" if op.get_bind().dialect.name == "postgresql" else "json_object"
    return f"{function}(" + ", ".join(f"'{key}', {value}" for key, value in pairs.items()) + ")"


def _conversion_json(with_original: bool) -> str:
    pairs = {
        "conversion_id": "NEW.id",
        "transaction_id": "NEW.transaction_id",
        "amount_minor": "NEW.amount_minor",
        "currency": "NEW.currency",
        "partner_id": "NEW.partner_id",
        "status": "NEW.status",
        "reason": "COALESCE(NEW.rejection_reason, NEW.flagged_reason)",
    }
    if with_original:
        pairs["original_amount_minor"] = "NEW.original_amount_minor"
        pairs["original_currency"] = "NEW.original_currency"
    return _json(pairs)


def _conversion_type(with_held: bool) -> str:
    held = "WHEN 'held' THEN 'conversion.held' " if with_held else ""
    return (
        "CASE NEW.status WHEN 'review' THEN 'conversion.flagged' "
        f"WHEN 'rejected' THEN 'conversion.rejected' {held}ELSE 'conversion.created' END"
    )


def _sqlite_edit(table: str, old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar()
    if old not in sql:
        raise RuntimeError(f"{table}: the SQL to replace is not there: {old}")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql.replace(old, new), table)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def _checks(upgrade: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    old_check = f"CONSTRAINT ck_conversions_status_known CHECK ({_OLD_STATUS})"
    new_check = (
        f"CONSTRAINT ck_conversions_status_known CHECK ({_NEW_STATUS}), \n\t"
        f"CONSTRAINT ck_conversions_converted_or_held CHECK ({_CONVERTED})"
    )
    if sqlite:
        _sqlite_edit("conversions", *((old_check, new_check) if upgrade else (new_check, old_check)))
        return
    op.drop_constraint(op.f('ck_conversions_status_known'), 'conversions', type_='check')
    if upgrade:
        op.create_check_constraint(op.f('ck_conversions_status_known'), 'conversions', _NEW_STATUS)
        op.create_check_constraint(op.f('ck_conversions_converted_or_held'), 'conversions', _CONVERTED)
    else:
        op.drop_constraint(op.f('ck_conversions_converted_or_held'), 'conversions', type_='check')
        op.create_check_constraint(op.f('ck_conversions_status_known'), 'conversions', _OLD_STATUS)


def _triggers(upgrade: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    condition, message = (_NEW_LEDGER, _NEW_LEDGER_MESSAGE) if upgrade else (_OLD_LEDGER, _OLD_LEDGER_MESSAGE)
    quoted = message.replace("'", "''")
    name = "ledger_conversions_money_fixed"
    insert = (
        "INSERT INTO outbox_events (type, partner_id, data, created_at) "
        f"VALUES ({_conversion_type(upgrade)}, NEW.partner_id, {_conversion_json(upgrade)}, NEW.created_at);"
    )
    if postgresql:
        op.execute(f"DROP TRIGGER {name} ON conversions")
        op.execute(
            f"CREATE TRIGGER {name} BEFORE UPDATE ON conversions FOR EACH ROW WHEN ({condition}) "
            f"EXECUTE FUNCTION ledger_refuse('{quoted}')"
        )
        op.execute(
            "CREATE OR REPLACE FUNCTION outbox_conversions_insert() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n    {insert}\n    RETURN NULL;\nEND\n$$"
        )
        return
    op.execute(f"DROP TRIGGER {name}")
    op.execute(
        f"CREATE TRIGGER {name} BEFORE UPDATE ON conversions FOR EACH ROW WHEN {condition} "
        f"BEGIN SELECT RAISE(ABORT, '{quoted}'); END"
    )
    op.execute("DROP TRIGGER outbox_conversions_insert")
    op.execute(f"CREATE TRIGGER outbox_conversions_insert AFTER INSERT ON conversions FOR EACH ROW BEGIN {insert} END")


def upgrade():
    op.create_table('exchange_rates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('base', sa.String(length=3), nullable=False),
    sa.Column('quote', sa.String(length=3), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('rate', sa.String(length=25), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', portal.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('base <> quote', name=op.f('ck_exchange_rates_pair_distinct')),
    sa.CheckConstraint('length(base) = 3 AND length(quote) = 3', name=op.f('ck_exchange_rates_currency_iso')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_exchange_rates_created_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exchange_rates')),
    sa.UniqueConstraint('base', 'quote', 'day', name='uq_exchange_rates_pair_day')
    )
    op.create_index('ix_exchange_rates_quote_day', 'exchange_rates', ['quote', 'day'], unique=False)
    # A SQLite downgrade leaves the columns in place (see downgrade): upgrading again keeps them.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns('conversions')}
    for column in (
        sa.Column('original_amount_minor', sa.BigInteger(), nullable=True),
        sa.Column('original_currency', sa.String(length=3), nullable=True),
        sa.Column('original_refunded_minor', sa.BigInteger(), nullable=True),
        sa.Column('fx_rate', sa.String(length=40), nullable=True),
        sa.Column('fx_rate_day', sa.Date(), nullable=True),
        sa.Column('fx_source', sa.String(length=40), nullable=True),
    ):
        if column.name not in present:
            op.add_column('conversions', column)
    _checks(upgrade=True)
    _triggers(upgrade=True)
    op.create_index(
        'ix_conversions_waiting_for_rate',
        'conversions',
        ['id'],
        unique=False,
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    )


def downgrade():
    op.drop_index('ix_conversions_waiting_for_rate', table_name='conversions')
    op.execute("DELETE FROM exchange_rates")
    _triggers(upgrade=False)
    _checks(upgrade=False)
    if op.get_bind().dialect.name == "postgresql":
        for name in ('fx_source', 'fx_rate_day', 'fx_rate', 'original_refunded_minor', 'original_currency', 'original_amount_minor'):
            op.drop_column('conversions', name)
    # SQLite keeps the (unused, all NULL) columns: dropping them would rebuild the table (0018).
    op.drop_index('ix_exchange_rates_quote_day', table_name='exchange_rates')
    op.drop_table('exchange_rates')
