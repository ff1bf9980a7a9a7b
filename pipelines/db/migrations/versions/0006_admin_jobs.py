"""admin jobs: an index to page through every owner's jobs, newest first

Revision ID: 0006_admin_jobs
Revises: 0001

Built CONCURRENTLY (outside the migration's transaction) so a deploy onto a large jobs
table does not block job inserts while it builds.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_admin_jobs'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index('ix_jobs_created', 'jobs',
                        [sa.literal_column('created_at DESC'), sa.literal_column('id DESC')],
                        unique=False, postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_jobs_created', table_name='jobs', postgresql_concurrently=True,
                      if_exists=True)
