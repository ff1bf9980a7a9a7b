"""agents: definitions, sessions and the ordered items of each session

Revision ID: 0012_agents
Revises: 0001

A session's state is its items (messages, tool calls, tool results) in `seq` order; each is
committed as it happens, so a redelivered turn continues from the last one. A tool result
is unique per (session, call id): a tool that completed is never recorded (or run) twice.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012_agents'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'agents',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('model', sa.Text(), nullable=False),
        sa.Column('instructions', sa.Text(), nullable=True),
        sa.Column('tools', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('knowledge_ids', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('limits', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_agents_owner_created', 'agents', ['owner_id', 'created_at'])
    op.create_table(
        'agent_sessions',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('agent_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('status', sa.Text(), server_default='idle', nullable=False),
        sa.Column('last_job_id', sa.UUID(as_uuid=False), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_agent_sessions_owner_created', 'agent_sessions',
                    ['owner_id', 'created_at'])
    op.create_table(
        'agent_items',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('session_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('seq', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('job_id', sa.UUID(as_uuid=False), nullable=True),
        sa.Column('type', sa.Text(), nullable=False),
        sa.Column('role', sa.Text(), nullable=True),
        sa.Column('content', sa.Text(), nullable=True),
        sa.Column('call_id', sa.Text(), nullable=True),
        sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_agent_items_session_seq', 'agent_items', ['session_id', 'seq'])
    op.create_index('uq_agent_items_call', 'agent_items', ['session_id', 'type', 'call_id'],
                    unique=True, postgresql_where=sa.text('call_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_table('agent_items')
    op.drop_table('agent_sessions')
    op.drop_table('agents')
