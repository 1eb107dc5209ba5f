"""money integrity: refunds with the merchant's refund id, a maximum sale, why an item is held

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('refunds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversion_id', sa.Integer(), nullable=False),
    sa.Column('refund_id', sa.String(length=100), nullable=True),
    sa.Column('amount_minor', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('response', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_refunds_amount_positive')),
    sa.CheckConstraint('length(currency) = 3', name=op.f('ck_refunds_currency_iso')),
    sa.ForeignKeyConstraint(['conversion_id'], ['conversions.id'], name=op.f('fk_refunds_conversion_id_conversions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
    sa.UniqueConstraint('conversion_id', 'refund_id', name='uq_refunds_conversion_refund_id')
    )
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refunds_conversion_id'), ['conversion_id'], unique=False)

    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_sale_minor', sa.Integer(), server_default='100000000', nullable=False))
        batch_op.create_check_constraint(op.f('ck_programs_max_sale_range'), 'max_sale_minor BETWEEN 1 AND 2000000000')

    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hold_reason', sa.String(length=32), nullable=True))
    # Items held before this revision were all held for want of payout details.
    op.execute("UPDATE payout_items SET hold_reason = 'no_details' WHERE status = 'held'")
    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.create_check_constraint(
            op.f('ck_payout_items_hold_reason_known'), "hold_reason IS NULL OR hold_reason IN ('no_details', 'suspended', 'details_changed')"
        )
        batch_op.create_check_constraint(op.f('ck_payout_items_held_has_reason'), "(status = 'held') = (hold_reason IS NOT NULL)")


def downgrade():
    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_payout_items_held_has_reason'), type_='check')
        batch_op.drop_constraint(op.f('ck_payout_items_hold_reason_known'), type_='check')
        batch_op.drop_column('hold_reason')

    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_programs_max_sale_range'), type_='check')
        batch_op.drop_column('max_sale_minor')

    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refunds_conversion_id'))

    op.drop_table('refunds')
