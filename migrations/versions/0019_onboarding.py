"""partners: when the partner first copied their link, grabbed a creative, read the program terms

The onboarding checklist ticks itself from these (payout details are the payout account).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 14:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('partners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('link_copied_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('creative_grabbed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('terms_read_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('partners', schema=None) as batch_op:
        batch_op.drop_column('terms_read_at')
        batch_op.drop_column('creative_grabbed_at')
        batch_op.drop_column('link_copied_at')
