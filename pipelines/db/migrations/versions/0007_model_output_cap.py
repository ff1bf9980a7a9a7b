"""models.max_output_tokens: the most output tokens one request may ask for

Revision ID: 0007_model_output_cap
Revises: 0003_models

Nullable (no cap of our own) and without a default, so adding it rewrites no rows and
holds the table's lock only for an instant.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_model_output_cap'
down_revision = '0003_models'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('models', sa.Column('max_output_tokens', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('models', 'max_output_tokens')
