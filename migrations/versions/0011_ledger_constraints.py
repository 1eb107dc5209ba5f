"""ledger constraints: corrections point at a line; money rows never deleted or rewritten

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 06:00:00

The CHECK constraints are declared on the models too. The triggers are not (autogenerate
does not see triggers): ``portal/models/rewards.py`` lists them in its docstring, and
``tests/unit/test_ledger.py`` proves each one refuses its bad write on SQLite and PostgreSQL.
None of them fires on an INSERT, so neither the conversion API's hot path nor a settlement
that writes a million payout_lines rows pays for them (payout_lines has no trigger at all).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def _changed(*columns: str) -> str:
    # IS DISTINCT FROM: SQLite (3.39+) and PostgreSQL alike, NULL-safe.
    return " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in columns)


# (name, table, event, condition or None, message). One refusal each; the message says why.
TRIGGERS = [
    (
        "ledger_commissions_money_fixed", "commissions", "UPDATE",
        _changed("amount_minor", "currency", "partner_id", "conversion_id", "kind", "reverses_id", "period"),
        "a commission line's amount, currency, partner, conversion, kind and target never change; "
        "write a correction line",
    ),
    (
        "ledger_commissions_confirmed_fixed", "commissions", "UPDATE",
        "OLD.status = 'confirmed' AND (" + _changed("status", "confirmed_at", "confirm_after") + ")",
        "a confirmed commission line stays confirmed",
    ),
    ("ledger_commissions_no_delete", "commissions", "DELETE", None, "commission lines are never deleted"),
    (
        "ledger_conversions_money_fixed", "conversions", "UPDATE",
        _changed("amount_minor", "currency", "transaction_id")
        + " OR NEW.refunded_minor < OLD.refunded_minor"
        + " OR (OLD.status = 'rejected' AND NEW.status <> 'rejected')",
        "a conversion's amount, currency and transaction id never change, its refunds only grow, "
        "and a rejected conversion stays rejected",
    ),
    ("ledger_conversions_no_delete", "conversions", "DELETE", None, "conversions are never deleted"),
    (
        "ledger_refunds_fixed", "refunds", "UPDATE",
        _changed("conversion_id", "refund_id", "amount_minor", "currency", "request_fingerprint"),
        "a refund is never rewritten",
    ),
    ("ledger_refunds_no_delete", "refunds", "DELETE", None, "refunds are never deleted"),
    (
        "ledger_payout_items_settled", "payout_items", "UPDATE",
        "OLD.status IN ('paid', 'failed') AND ("
        + _changed("status", "reference", "paid_on", "failure_reason")
        + ")",
        "a paid or failed payout item is final: never paid again, failed, or changed",
    ),
    (
        "ledger_payout_items_money_fixed", "payout_items", "UPDATE",
        "OLD.status <> 'held' AND (" + _changed("amount_minor", "currency", "partner_id", "batch_id") + ")",
        "a payout item's amount, currency, partner and batch never change once it is payable",
    ),
    ("ledger_payout_items_no_delete", "payout_items", "DELETE", None, "payout items are never deleted"),
]

_PG_FUNCTION = """
CREATE FUNCTION ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = TG_ARGV[0];
END
$$
"""


def _create_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute(_PG_FUNCTION)
    for name, table, event, condition, message in TRIGGERS:
        quoted = message.replace("'", "''")
        if postgresql:
            when = f"WHEN ({condition}) " if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW {when}"
                f"EXECUTE FUNCTION ledger_refuse('{quoted}')"
            )
        else:
            when = f"WHEN {condition} " if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW {when}"
                f"BEGIN SELECT RAISE(ABORT, '{quoted}'); END"
            )


def _drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table, _event, _condition, _message in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}" if postgresql else f"DROP TRIGGER IF EXISTS {name}")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse()")


def upgrade():
    with op.batch_alter_table('commissions', schema=None) as batch_op:
        batch_op.create_check_constraint(
            op.f('ck_commissions_correction_has_target'),
            "(kind IN ('reversal', 'clawback')) = (reverses_id IS NOT NULL)",
        )
    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.create_check_constraint(op.f('ck_payout_items_currency_iso'), 'length(currency) = 3')
    with op.batch_alter_table('payout_batches', schema=None) as batch_op:
        batch_op.create_check_constraint(op.f('ck_payout_batches_currency_iso'), 'length(currency) = 3')
    # After the batch operations: on SQLite they rebuild the table, which drops its triggers.
    _create_triggers()


def downgrade():
    _drop_triggers()
    with op.batch_alter_table('payout_batches', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_payout_batches_currency_iso'), type_='check')
    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_payout_items_currency_iso'), type_='check')
    with op.batch_alter_table('commissions', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_commissions_correction_has_target'), type_='check')
