"""conversations: conversations, conversation_messages

Revision ID: 0004_conversations
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004_conversations'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'conversations',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('title', sa.Text(), nullable=True),
        sa.Column('model', sa.Text(), nullable=False),
        sa.Column('system_prompt', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('last_pruning', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_conversations_owner_created', 'conversations',
                    ['owner_id', 'created_at'], unique=False)
    op.create_index('ix_conversations_owner_updated', 'conversations',
                    ['owner_id', 'updated_at'], unique=False)
    op.create_table(
        'conversation_messages',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('conversation_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('role', sa.Text(), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('tokens', sa.Integer(), server_default='0', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('job_id', sa.UUID(as_uuid=False), nullable=True),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_conversation_messages_conversation', 'conversation_messages',
                    ['conversation_id', 'id'], unique=False)
    op.create_index('uq_conversation_messages_reply', 'conversation_messages', ['job_id'],
                    unique=True,
                    postgresql_where=sa.text("role = 'assistant' AND job_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index('uq_conversation_messages_reply', table_name='conversation_messages',
                  postgresql_where=sa.text("role = 'assistant' AND job_id IS NOT NULL"))
    op.drop_index('ix_conversation_messages_conversation', table_name='conversation_messages')
    op.drop_table('conversation_messages')
    op.drop_index('ix_conversations_owner_updated', table_name='conversations')
    op.drop_index('ix_conversations_owner_created', table_name='conversations')
    op.drop_table('conversations')
