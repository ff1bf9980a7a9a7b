"""webhooks: an owner's event subscriptions and the deliveries of each event

Revision ID: 0013_webhooks
Revises: 0001

A subscription holds its URL, the events it wants and its signing secret (sealed). Each
event an owner's job or agent turn raises becomes one pending delivery per subscription
that wants it; the delivery actor records every attempt on that row.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013_webhooks'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('events', postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    # Every terminal job asks this index for its owner's subscriptions.
    op.create_index('ix_webhook_subscriptions_owner_created', 'webhook_subscriptions',
                    ['owner_id', 'created_at'])
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('webhook_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('event', sa.Text(), nullable=False),
        sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('status', sa.Text(), server_default='pending', nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['webhook_id'], ['webhook_subscriptions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_deliveries_webhook_created', 'webhook_deliveries',
                    ['webhook_id', 'created_at'])
    # The sweeper's look for pending deliveries whose message was lost.
    op.create_index('ix_webhook_deliveries_pending', 'webhook_deliveries', ['updated_at'],
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_subscriptions')
