"""running balance: a partner's confirmed balance in one row; payout_lines loses its second index

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 18:00:00

``partner_balances`` (partner, currency) holds the sum of the partner's confirmed lines
(``confirmed_minor``) and of their payout items waiting or paid (``settled_minor``); the
confirmed balance the partner sees is the difference, read from one row instead of every
line of their history joined against payout_lines. Triggers keep it, on every insert,
update and delete of a commission line or a payout item, so no code path can forget it:

- commissions, INSERT: per row, only for a line inserted confirmed (``WHEN``: a sale's
  pending lines, the conversion API's hot path, call nothing);
- commissions and payout items, UPDATE and DELETE (and items' INSERT): PostgreSQL per
  statement, over its transition tables (confirming a day's lines is one aggregate, not a
  call per line); SQLite per row (``WHEN`` the row is or was counted).

payout_lines gets no trigger: settlement writes one row per line, and a line in a payout is
counted through its item. ``check_ledger`` recounts both columns (``running_balance``).
Existing rows are counted in here.

ix_payout_lines_payout_item_id is dropped: maintaining it was a third of building a
10M-line batch on PostgreSQL. An item's lines are reached from its partner's lines.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_COUNTED_ITEM = "IN ('pending', 'paid')"

_BACKFILL = f"""
INSERT INTO partner_balances (partner_id, currency, confirmed_minor, settled_minor)
SELECT partner_id, currency, sum(confirmed), sum(settled) FROM (
    SELECT partner_id, currency, amount_minor AS confirmed, 0 AS settled
    FROM commissions WHERE status = 'confirmed'
    UNION ALL
    SELECT partner_id, currency, 0, amount_minor FROM payout_items WHERE status {_COUNTED_ITEM}
) AS totals
GROUP BY partner_id, currency
"""


def _pg_add(column: str, rows: str) -> str:
    """Add ``rows`` (partner_id, currency, amount) to ``column``, one upsert per partner and currency,
    in partner order: two statements touching the same partners lock their rows in the same order."""
    return f"""
        INSERT INTO partner_balances AS b (partner_id, currency, confirmed_minor, settled_minor)
        SELECT partner_id, currency, {"sum(amount), 0" if column == "confirmed_minor" else "0, sum(amount)"}
        FROM ({rows}) AS changed
        GROUP BY partner_id, currency
        HAVING sum(amount) <> 0
        ORDER BY partner_id, currency
        ON CONFLICT (partner_id, currency) DO UPDATE SET {column} = b.{column} + EXCLUDED.{column};
    """


def _pg_rows(table: str, condition: str, sign: str = "") -> str:
    return f"SELECT partner_id, currency, {sign}amount_minor AS amount FROM {table} WHERE {condition}"


_PG_FUNCTIONS = [
    """
    CREATE FUNCTION balance_line_confirmed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO partner_balances AS b (partner_id, currency, confirmed_minor, settled_minor)
        VALUES (NEW.partner_id, NEW.currency, NEW.amount_minor, 0)
        ON CONFLICT (partner_id, currency) DO UPDATE
        SET confirmed_minor = b.confirmed_minor + EXCLUDED.confirmed_minor;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION balance_lines_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            {
        _pg_add(
            "confirmed_minor",
            _pg_rows("new_rows", "status = 'confirmed'")
            + " UNION ALL "
            + _pg_rows("old_rows", "status = 'confirmed'", "-"),
        )
    }
        ELSE
            {_pg_add("confirmed_minor", _pg_rows("old_rows", "status = 'confirmed'", "-"))}
        END IF;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE FUNCTION balance_items_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_pg_add("settled_minor", _pg_rows("new_rows", f"status {_COUNTED_ITEM}"))}
        ELSIF TG_OP = 'UPDATE' THEN
            {
        _pg_add(
            "settled_minor",
            _pg_rows("new_rows", f"status {_COUNTED_ITEM}")
            + " UNION ALL "
            + _pg_rows("old_rows", f"status {_COUNTED_ITEM}", "-"),
        )
    }
        ELSE
            {_pg_add("settled_minor", _pg_rows("old_rows", f"status {_COUNTED_ITEM}", "-"))}
        END IF;
        RETURN NULL;
    END
    $$
    """,
]

# (name, table, PostgreSQL's CREATE TRIGGER tail)
_PG_TRIGGERS = [
    (
        "balance_commissions_insert",
        "commissions",
        "AFTER INSERT ON commissions FOR EACH ROW WHEN (NEW.status = 'confirmed') "
        "EXECUTE FUNCTION balance_line_confirmed()",
    ),
    (
        "balance_commissions_update",
        "commissions",
        "AFTER UPDATE ON commissions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION balance_lines_changed()",
    ),
    (
        "balance_commissions_delete",
        "commissions",
        "AFTER DELETE ON commissions REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION balance_lines_changed()",
    ),
    (
        "balance_payout_items_insert",
        "payout_items",
        "AFTER INSERT ON payout_items REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION balance_items_changed()",
    ),
    (
        "balance_payout_items_update",
        "payout_items",
        "AFTER UPDATE ON payout_items REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION balance_items_changed()",
    ),
    (
        "balance_payout_items_delete",
        "payout_items",
        "AFTER DELETE ON payout_items REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION balance_items_changed()",
    ),
]


def _sqlite_add(column: str, row: str, sign: str, condition: str) -> str:
    values = f"{row}.partner_id, {row}.currency, " + (
        f"{sign}{row}.amount_minor, 0" if column == "confirmed_minor" else f"0, {sign}{row}.amount_minor"
    )
    return (
        "INSERT INTO partner_balances (partner_id, currency, confirmed_minor, settled_minor) "
        f"SELECT {values} WHERE {condition} "
        f"ON CONFLICT (partner_id, currency) DO UPDATE SET {column} = {column} + excluded.{column};"
    )


def _sqlite_triggers(table: str, column: str, counted: str) -> list[tuple[str, str]]:
    """(name, CREATE TRIGGER) for the insert, update and delete of ``table``'s rows."""
    new, old = counted.format(row="NEW"), counted.format(row="OLD")
    return [
        (
            f"balance_{table}_insert",
            f"CREATE TRIGGER balance_{table}_insert AFTER INSERT ON {table} WHEN {new} "
            f"BEGIN {_sqlite_add(column, 'NEW', '', new)} END",
        ),
        (
            f"balance_{table}_update",
            f"CREATE TRIGGER balance_{table}_update "
            f"AFTER UPDATE OF status, amount_minor, partner_id, currency ON {table} WHEN {old} OR {new} "
            f"BEGIN {_sqlite_add(column, 'OLD', '-', old)} {_sqlite_add(column, 'NEW', '', new)} END",
        ),
        (
            f"balance_{table}_delete",
            f"CREATE TRIGGER balance_{table}_delete AFTER DELETE ON {table} WHEN {old} "
            f"BEGIN {_sqlite_add(column, 'OLD', '-', old)} END",
        ),
    ]


_SQLITE_TRIGGERS = _sqlite_triggers("commissions", "confirmed_minor", "{row}.status = 'confirmed'") + (
    _sqlite_triggers("payout_items", "settled_minor", "{row}.status " + _COUNTED_ITEM)
)


def upgrade():
    op.drop_index("ix_payout_lines_payout_item_id", table_name="payout_lines")

    op.create_table(
        "partner_balances",
        sa.Column("partner_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("confirmed_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("settled_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_partner_balances_currency_iso")),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_partner_balances_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("partner_id", "currency", name=op.f("pk_partner_balances")),
    )
    op.execute(_BACKFILL)

    if op.get_bind().dialect.name == "postgresql":
        for function in _PG_FUNCTIONS:
            op.execute(function)
        for name, _table, tail in _PG_TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} {tail}")
    else:
        for _name, trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for name, table, _tail in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for function in ("balance_line_confirmed", "balance_lines_changed", "balance_items_changed"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for name, _trigger in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("partner_balances")
    op.create_index("ix_payout_lines_payout_item_id", "payout_lines", ["payout_item_id"], unique=False)
