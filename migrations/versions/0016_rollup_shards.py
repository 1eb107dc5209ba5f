"""rollup shards: the program-wide day rows (per channel, per creative) split by partner

Every attributed sale and click batch adds to its day's program rows. With one row per
day and channel, every writer of the program waited for the previous one's commit on that
row (PostgreSQL row locks); with ``shard`` (partner id modulo ROLLUP_SHARDS) in the key,
only a partner's own events meet. Readers sum over the shards (they always summed).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 09:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

_TABLES = (('stats_program_daily', 'channel'), ('stats_creative_daily', 'creative_id'))


def upgrade():
    for table, column in _TABLES:
        with op.batch_alter_table(table, schema=None, recreate='always') as batch_op:
            batch_op.add_column(sa.Column('shard', sa.SmallInteger(), server_default='0', nullable=False))
            batch_op.drop_constraint(f'pk_{table}', type_='primary')
            batch_op.create_primary_key(f'pk_{table}', ['day', column, 'shard'])


def downgrade():
    for table, column in _TABLES:
        # Fold the shards back into one row per key first.
        counters = ('clicks', 'unique_clicks', 'bot_clicks', 'signups', 'conversions',
                    'conversions_review', 'conversions_rejected', 'sales_minor', 'commission_minor')
        sums = ', '.join(f'sum({name}) AS {name}' for name in counters)
        names = ', '.join(counters)
        op.execute(f'CREATE TEMPORARY TABLE folded AS SELECT day, {column}, {sums} FROM {table} GROUP BY day, {column}')
        op.execute(f'DELETE FROM {table}')
        op.execute(f'INSERT INTO {table} (day, {column}, {names}, shard) SELECT *, 0 FROM folded')
        op.execute('DROP TABLE folded')
        with op.batch_alter_table(table, schema=None, recreate='always') as batch_op:
            batch_op.drop_constraint(f'pk_{table}', type_='primary')
            batch_op.create_primary_key(f'pk_{table}', ['day', column])
            batch_op.drop_column('shard')
