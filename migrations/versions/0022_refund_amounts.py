"""refund amounts: 64-bit, as the sale's original amounts are

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 18:45:00

A refund is stored in the currency the shop sent the sale in. Since 0020 that may be a
currency whose amounts run large in minor units (IDR, VND, KRW …): the sale's
``original_amount_minor`` is 64-bit, but ``refunds.amount_minor`` was not, so on PostgreSQL
refunding an IDR 30,000,000.00 sale (3,000,000,000 minor units, about 1,900 US dollars)
failed with "integer out of range" and the API answered 500.

PostgreSQL: the ledger trigger ``ledger_refunds_fixed`` names the column in its WHEN, which
PostgreSQL refuses to retype under it: dropped, the column widened, re-created as 0011 made
it. SQLite stores every INTEGER in up to 8 bytes already: only the declared type in the
table's SQL changes (edited in ``sqlite_master``, as 0018 and 0020 do; a rebuild would drop
the table's triggers), nothing on disk.
"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_TRIGGER = "ledger_refunds_fixed"
_CONDITION = " OR ".join(
    f"NEW.{column} IS DISTINCT FROM OLD.{column}"
    for column in ("conversion_id", "refund_id", "amount_minor", "currency", "request_fingerprint")
)
_MESSAGE = "a refund is never rewritten"


def _pg_retype(sql_type: str) -> None:
    op.execute(f"DROP TRIGGER IF EXISTS {_TRIGGER} ON refunds")
    op.execute(f"ALTER TABLE refunds ALTER COLUMN amount_minor TYPE {sql_type}")
    op.execute(
        f"CREATE TRIGGER {_TRIGGER} BEFORE UPDATE ON refunds FOR EACH ROW WHEN ({_CONDITION}) "
        f"EXECUTE FUNCTION ledger_refuse('{_MESSAGE}')"
    )


def _sqlite_retype(old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'refunds'"
    ).scalar()
    if old not in sql:
        raise RuntimeError(f"refunds: the column to retype is not there: {old}")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'refunds'",
        (sql.replace(old, new, 1),),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        _pg_retype("BIGINT")
    else:
        _sqlite_retype("amount_minor INTEGER NOT NULL", "amount_minor BIGINT NOT NULL")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        _pg_retype("INTEGER")
    else:
        _sqlite_retype("amount_minor BIGINT NOT NULL", "amount_minor INTEGER NOT NULL")
