"""coupons: partners' coupon codes; the code on signups and sales; attribution by coupon

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 14:40:00

``attribution_method`` may now be ``coupon`` (signups and conversions). SQLite cannot alter a
CHECK constraint, and its usual way round (rebuild the table) would, with foreign keys on
and inside the migration's transaction, run the ON DELETE actions of every table pointing
at the rebuilt one (and drop its ledger and outbox triggers). Widening a CHECK changes
nothing on disk, so on SQLite the table's own SQL is edited in ``sqlite_master`` instead,
the documented way for such changes (sqlite.org/lang_altertable.html, "otheralter"); the
schema version goes up so every connection reads it again. The new columns are plain
``ADD COLUMN`` (no rebuild either).
"""
from alembic import op
import sqlalchemy as sa

import portal.models.types


# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

_WITH_COUPON = "attribution_method IS NULL OR attribution_method IN ('click_id', 'coupon', 'ref', 'customer')"
_WITHOUT_COUPON = "attribution_method IS NULL OR attribution_method IN ('click_id', 'ref', 'customer')"


def _sqlite_edit(table: str, old: str, new: str, append: str | None = None) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar()
    if old not in sql:
        raise RuntimeError(f"{table}: the CHECK constraint to replace is not there")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    sql = sql.replace(old, new)
    if append:
        head, _, tail = sql.rstrip().rpartition(")")
        sql = f"{head.rstrip()}, \n\t{append}\n){tail}"
    bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql, table))
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def _method_check(old: str, new: str, foreign_key: bool = False) -> None:
    for table in ("signups", "conversions"):
        if op.get_bind().dialect.name == "sqlite":
            append = (
                f"CONSTRAINT fk_{table}_coupon_id_coupons FOREIGN KEY(coupon_id) REFERENCES coupons (id) "
                "ON DELETE SET NULL"
            )
            _sqlite_edit(table, old, new, append if foreign_key else None)
        else:
            op.drop_constraint(op.f(f'ck_{table}_attribution_method_known'), table, type_='check')
            op.create_check_constraint(op.f(f'ck_{table}_attribution_method_known'), table, new)


def upgrade():
    op.create_table('coupons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('created_at', portal.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', portal.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("status IN ('requested', 'active', 'disabled')", name=op.f('ck_coupons_status_known')),
    sa.CheckConstraint('length(code) BETWEEN 3 AND 40', name=op.f('ck_coupons_code_length')),
    sa.CheckConstraint('code = upper(code)', name=op.f('ck_coupons_code_upper')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_coupons_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_coupons_decided_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_coupons_partner_id_partners'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coupons')),
    sa.UniqueConstraint('code', name=op.f('uq_coupons_code'))
    )
    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coupons_partner_id'), ['partner_id'], unique=False)

    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('coupon_attribution', sa.String(length=16), server_default='coupon', nullable=False))
        batch_op.create_check_constraint(op.f('ck_programs_coupon_attribution_known'), "coupon_attribution IN ('coupon', 'first_touch')")

    for table in ("signups", "conversions"):
        op.add_column(table, sa.Column('coupon_code', sa.String(length=128), nullable=True))
        if op.get_bind().dialect.name == "sqlite":
            # Its foreign key is added to the table's SQL with the CHECK below (the column is
            # all NULL, so nothing on disk changes); written at table level, as SQLAlchemy
            # reflects it (name and ON DELETE).
            op.add_column(table, sa.Column('coupon_id', sa.Integer(), nullable=True))
        else:
            op.add_column(table, sa.Column('coupon_id', sa.Integer(), nullable=True))
            op.create_foreign_key(
                op.f(f'fk_{table}_coupon_id_coupons'), table, 'coupons', ['coupon_id'], ['id'], ondelete='SET NULL'
            )
        op.create_index(f'ix_{table}_coupon_id', table, ['coupon_id'], unique=False)
    _method_check(_WITHOUT_COUPON, _WITH_COUPON, foreign_key=True)


def downgrade():
    for table in ("signups", "conversions"):
        op.execute(f"UPDATE {table} SET attribution_method = NULL WHERE attribution_method = 'coupon'")
    _method_check(_WITH_COUPON, _WITHOUT_COUPON)
    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_programs_coupon_attribution_known'), type_='check')
        batch_op.drop_column('coupon_attribution')
    if op.get_bind().dialect.name == "sqlite":
        # SQLite drops a column only without a constraint on it, and dropping the coupons
        # table would leave foreign keys naming a missing table: both stay, unused (no rebuild,
        # for the reason above). Upgrading again would need them gone: restore a backup instead.
        return
    for table in ("conversions", "signups"):
        op.drop_index(f'ix_{table}_coupon_id', table_name=table)
        op.drop_constraint(op.f(f'fk_{table}_coupon_id_coupons'), table, type_='foreignkey')
        op.drop_column(table, 'coupon_id')
        op.drop_column(table, 'coupon_code')

    with op.batch_alter_table('coupons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coupons_partner_id'))

    op.drop_table('coupons')
