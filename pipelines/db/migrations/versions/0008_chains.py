"""chains: definitions with versions, runs and their steps

Revision ID: 0008_chains
Revises: 0001

A run's id is its `chain` job's id, and its status is that job's: the job row stays the one
source of truth for where a run is. Each step row points at the `chain_step` job that runs
it (a new job per dispatch; a resumed step gets a fresh one).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008_chains'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'chains',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('status', sa.Text(), server_default='draft', nullable=False),
        sa.Column('version', sa.Integer(), server_default='1', nullable=False),
        sa.Column('definition', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('prompt_count', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_chains_owner_created', 'chains',
                    ['owner_id', sa.literal_column('created_at DESC'), sa.literal_column('id DESC')])
    op.create_table(
        'chain_versions',
        sa.Column('chain_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('definition', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('chain_id', 'version'),
    )
    op.create_table(
        'chain_runs',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('chain_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('inputs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('rerun_of', sa.UUID(as_uuid=False), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_chain_runs_chain_created', 'chain_runs',
                    ['chain_id', sa.literal_column('created_at DESC'), sa.literal_column('id DESC')])
    op.create_table(
        'chain_run_steps',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('run_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('prompt_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('status', sa.Text(), server_default='pending', nullable=False),
        sa.Column('job_id', sa.UUID(as_uuid=False), nullable=True),
        sa.Column('job_attempt', sa.Integer(), server_default='0', nullable=False),
        sa.Column('input', sa.Text(), nullable=True),
        sa.Column('output', sa.Text(), nullable=True),
        sa.Column('model', sa.Text(), nullable=True),
        sa.Column('prompt_tokens', sa.Integer(), nullable=True),
        sa.Column('completion_tokens', sa.Integer(), nullable=True),
        sa.Column('cost_usd', sa.Numeric(20, 10), nullable=True),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('reused', sa.Boolean(), server_default='false', nullable=False),
        sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('duration_ms', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['chain_runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'prompt_id', name='uq_chain_run_steps_prompt'),
    )
    op.create_index('ix_chain_run_steps_job', 'chain_run_steps', ['job_id'])


def downgrade() -> None:
    op.drop_table('chain_run_steps')
    op.drop_table('chain_runs')
    op.drop_table('chain_versions')
    op.drop_table('chains')
