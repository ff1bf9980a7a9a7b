"""models registry, usage records, jobs.key_id

Revision ID: 0003_models
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003_models'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('upstream_model', sa.Text(), nullable=False),
    sa.Column('base_url', sa.Text(), nullable=True),
    sa.Column('api_key', sa.Text(), nullable=True),
    sa.Column('context_window', sa.Integer(), server_default='8192', nullable=False),
    sa.Column('capabilities', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text('\'["chat", "streaming"]\''), nullable=False),
    sa.Column('input_price_per_mtok', sa.Numeric(14, 6), server_default='0', nullable=False),
    sa.Column('output_price_per_mtok', sa.Numeric(14, 6), server_default='0', nullable=False),
    sa.Column('fallbacks', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'"), nullable=False),
    sa.Column('timeout_s', sa.Float(), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('source', sa.Text(), server_default='admin', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('usage_records',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.UUID(as_uuid=False), nullable=False),
    sa.Column('owner_id', sa.Text(), nullable=False),
    sa.Column('key_id', sa.Text(), nullable=True),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('ttft_ms', sa.Float(), nullable=True),
    sa.Column('cost_usd', sa.Numeric(20, 10), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id')
    )
    op.create_index('ix_usage_owner_created', 'usage_records', ['owner_id', 'created_at'], unique=False)
    op.create_index('ix_usage_created', 'usage_records', ['created_at'], unique=False)
    op.add_column('jobs', sa.Column('key_id', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'key_id')
    op.drop_index('ix_usage_created', table_name='usage_records')
    op.drop_index('ix_usage_owner_created', table_name='usage_records')
    op.drop_table('usage_records')
    op.drop_table('models')
