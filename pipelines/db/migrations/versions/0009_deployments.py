"""deployments, models.runtime_status

Revision ID: 0009_deployments
Revises: 0001
Depends on: 0003_models

`runtime_status` is nullable without a default, so adding it rewrites no model row.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009_deployments'
down_revision = '0001'
branch_labels = None
depends_on = '0003_models'


def upgrade() -> None:
    op.add_column('models', sa.Column('runtime_status', sa.Text(), nullable=True))
    op.create_table('deployments',
    sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
    sa.Column('owner_id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('upstream_model', sa.Text(), nullable=False),
    sa.Column('target_type', sa.Text(), nullable=False),
    sa.Column('target', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('context_window', sa.Integer(), server_default='8192', nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('estimated_hourly_cost', sa.Numeric(14, 6), server_default='0', nullable=False),
    sa.Column('desired', sa.Text(), server_default='running', nullable=False),
    sa.Column('generation', sa.Integer(), server_default='0', nullable=False),
    sa.Column('state', sa.Text(), server_default='pending', nullable=False),
    sa.Column('state_message', sa.Text(), nullable=True),
    sa.Column('restart_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('first_failure_reason', sa.Text(), nullable=True),
    sa.Column('first_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('base_url', sa.Text(), nullable=True),
    sa.Column('supervisor', sa.Text(), nullable=True),
    sa.Column('last_health_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_health_latency_ms', sa.Float(), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cost_accrued_usd', sa.Numeric(20, 10), server_default='0', nullable=False),
    sa.Column('billed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model')
    )


def downgrade() -> None:
    op.drop_table('deployments')
    op.drop_column('models', 'runtime_status')
