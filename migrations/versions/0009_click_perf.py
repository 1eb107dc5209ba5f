"""click perf: the lookup cache's change counter, deferred conversion messages, one click index less

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 14:00:00

Follows 0008_rewards.

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    lookup_version = op.create_table('lookup_version',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lookup_version'))
    )
    # The one row every change counts in (portal/lookups.py).
    op.bulk_insert(lookup_version, [{'id': 1, 'version': 0}])
    # Nothing reads clicks by address and code (the click-flood rule counts in memory):
    # one index less for every click written.
    with op.batch_alter_table('clicks', schema=None) as batch_op:
        batch_op.drop_index('ix_clicks_ip_link_created')
    op.create_table('deferred_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('conversion_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversion_id'], ['conversions.id'], name=op.f('fk_deferred_messages_conversion_id_conversions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deferred_messages'))
    )


def downgrade():
    op.drop_table('deferred_messages')
    with op.batch_alter_table('clicks', schema=None) as batch_op:
        batch_op.create_index('ix_clicks_ip_link_created', ['ip_hash', 'code', 'created_at'], unique=False)
    op.drop_table('lookup_version')
