"""payout performance: commission lines join payouts through payout_lines

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:20:00

ix_commissions_partner_unpaid (partner_id, payout_item_id), added by 0006 for the dashboards'
balance figures, goes with the column too: the unpaid lines are now "no payout_lines row".

A line's payout moves from the commissions.payout_item_id column to a narrow table keyed
by the line (payout_lines.commission_id is the primary key: a line is in at most one payout,
enforced by the database as before). Building a batch of 1M lines then writes 1M small rows
instead of rewriting 1M commission rows and two indexes over payout_item_id. The table has no
foreign keys on purpose (PostgreSQL's per-row checks made a 1M-line batch several times
slower); see portal/models/payouts.py.
ix_commissions_settle (status, payout_item_id, confirm_after) goes with the column; confirming
due lines uses a partial index of the pending ones. ix_commissions_partner_status (partner_id,
status) also carries confirm_after, currency and amount_minor, so settlement sums and assigns
the lines from the index alone (SQLite otherwise looked each of 1M rows up at random).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('payout_lines',
    sa.Column('commission_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('payout_item_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('commission_id', name=op.f('pk_payout_lines'))
    )
    with op.batch_alter_table('payout_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payout_lines_payout_item_id'), ['payout_item_id'], unique=False)

    op.execute(
        "INSERT INTO payout_lines (commission_id, payout_item_id) "
        "SELECT id, payout_item_id FROM commissions WHERE payout_item_id IS NOT NULL"
    )

    with op.batch_alter_table('commissions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_commissions_payout_item_id_payout_items'), type_='foreignkey')
        batch_op.drop_index('ix_commissions_settle')
        batch_op.drop_index('ix_commissions_partner_unpaid')
        batch_op.drop_index(batch_op.f('ix_commissions_payout_item_id'))
        batch_op.drop_column('payout_item_id')
        batch_op.create_index('ix_commissions_pending_due', ['confirm_after'], unique=False, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_index('ix_commissions_partner_status')
        batch_op.create_index('ix_commissions_partner_status', ['partner_id', 'status', 'confirm_after', 'currency', 'amount_minor'], unique=False)


def downgrade():
    with op.batch_alter_table('commissions', schema=None) as batch_op:
        batch_op.drop_index('ix_commissions_partner_status')
        batch_op.create_index('ix_commissions_partner_status', ['partner_id', 'status'], unique=False)
        batch_op.drop_index('ix_commissions_pending_due', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.add_column(sa.Column('payout_item_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_commissions_payout_item_id'), ['payout_item_id'], unique=False)
        batch_op.create_index('ix_commissions_settle', ['status', 'payout_item_id', 'confirm_after'], unique=False)
        batch_op.create_index('ix_commissions_partner_unpaid', ['partner_id', 'payout_item_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_commissions_payout_item_id_payout_items'), 'payout_items', ['payout_item_id'], ['id'], ondelete='SET NULL')

    op.execute(
        "UPDATE commissions SET payout_item_id = "
        "(SELECT payout_item_id FROM payout_lines WHERE payout_lines.commission_id = commissions.id)"
    )

    with op.batch_alter_table('payout_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payout_lines_payout_item_id'))

    op.drop_table('payout_lines')
