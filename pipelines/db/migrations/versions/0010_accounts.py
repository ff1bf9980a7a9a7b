"""accounts that hold: passkeys (WebAuthn credentials) and the knowledge marketplace

Revision ID: 0010_accounts
Revises: 0001
Depends on: 0002 (users), 0005_knowledge (knowledge_bases)

A passkey's id is the authenticator's credential id (base64url), so login finds it by the
id the browser sends. A listing offers a knowledge base; acquiring it records an
entitlement (with the price at the time; there is no payment processor) that outlives the
listing being unlisted. One listed listing per base.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010_accounts'
down_revision = '0001'
branch_labels = None
depends_on = ('0002', '0005_knowledge')


def upgrade() -> None:
    op.create_table(
        'webauthn_credentials',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('user_id', sa.UUID(as_uuid=False),
                  sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('public_key', sa.LargeBinary(), nullable=False),
        sa.Column('sign_count', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('transports', postgresql.ARRAY(sa.Text()), server_default='{}',
                  nullable=False),
        sa.Column('aaguid', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_webauthn_credentials_user', 'webauthn_credentials', ['user_id'])
    op.create_table(
        'marketplace_listings',
        sa.Column('id', sa.UUID(as_uuid=False), primary_key=True),
        sa.Column('knowledge_id', sa.UUID(as_uuid=False),
                  sa.ForeignKey('knowledge_bases.id', ondelete='CASCADE'), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('title', sa.Text(), nullable=False),
        sa.Column('description', sa.Text(), server_default='', nullable=False),
        sa.Column('price', sa.Numeric(12, 2), server_default='0', nullable=False),
        sa.Column('category', sa.Text(), nullable=False),
        sa.Column('license_type', sa.Text(), nullable=False),
        sa.Column('preview_enabled', sa.Boolean(), server_default=sa.text('false'),
                  nullable=False),
        sa.Column('status', sa.Text(), server_default='listed', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('unlisted_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_marketplace_listings_listed', 'marketplace_listings',
                    [sa.text('created_at DESC'), sa.text('id DESC')],
                    postgresql_where=sa.text("status = 'listed'"))
    op.create_index('uq_marketplace_listings_base_listed', 'marketplace_listings',
                    ['knowledge_id'], unique=True,
                    postgresql_where=sa.text("status = 'listed'"))
    op.create_table(
        'marketplace_entitlements',
        sa.Column('id', sa.UUID(as_uuid=False), primary_key=True),
        sa.Column('listing_id', sa.UUID(as_uuid=False),
                  sa.ForeignKey('marketplace_listings.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('knowledge_id', sa.UUID(as_uuid=False),
                  sa.ForeignKey('knowledge_bases.id', ondelete='CASCADE'), nullable=False),
        sa.Column('user_id', sa.Text(), nullable=False),
        sa.Column('price', sa.Numeric(12, 2), nullable=False),
        sa.Column('license_type', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index('uq_marketplace_entitlements_user_base', 'marketplace_entitlements',
                    ['user_id', 'knowledge_id'], unique=True)
    op.create_table(
        'marketplace_ratings',
        sa.Column('listing_id', sa.UUID(as_uuid=False),
                  sa.ForeignKey('marketplace_listings.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('user_id', sa.Text(), primary_key=True),
        sa.Column('rating', sa.SmallInteger(), nullable=False),
        sa.Column('review', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint('rating BETWEEN 1 AND 5', name='ck_marketplace_ratings_range'),
    )


def downgrade() -> None:
    op.drop_table('marketplace_ratings')
    op.drop_table('marketplace_entitlements')
    op.drop_table('marketplace_listings')
    op.drop_table('webauthn_credentials')
