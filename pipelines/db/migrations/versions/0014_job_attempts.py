"""job_attempts: one row per delivery of a job, with its worker and timings

Revision ID: 0014_job_attempts
Revises: 0001

The worker's claim statement inserts the row (worker id, host, pid, start) and the
statement that ends the job finishes it (time, outcome, error), each as a CTE of the
statement already run, so the job's hot path gains no round trip. Jobs from before this
revision have no rows. No foreign key to `jobs`: jobs are never deleted.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0014_job_attempts'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_attempts',
        sa.Column('job_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('worker_id', sa.Text(), nullable=False),
        sa.Column('host', sa.Text(), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('outcome', sa.Text(), nullable=True),
        sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint('job_id', 'attempt'),
    )


def downgrade() -> None:
    op.drop_table('job_attempts')
