"""knowledge: knowledge_bases, documents, chunks (pgvector HNSW + full text)

Revision ID: 0005_knowledge
Revises: 0001

`chunks.embedding` is an untyped `vector`, so bases on models of different dimensions
share one table. HNSW needs a fixed dimension, so each common dimension gets a partial
expression index (pgvector's documented way to index mixed dimensions); queries repeat the
exact cast and predicate. 3072 (text-embedding-3-large) exceeds vector's 2000-dimension
HNSW limit and is indexed as halfvec. Other dimensions still work, by exact scan.
"""
import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision = '0005_knowledge'
down_revision = '0001'
branch_labels = None
depends_on = None

# dimension -> pgvector type of the indexed expression (frozen here: a later change is a
# new migration).
HNSW_DIMENSIONS = {384: 'vector', 768: 'vector', 1024: 'vector', 1536: 'vector',
                   3072: 'halfvec'}


def upgrade() -> None:
    op.execute('CREATE EXTENSION IF NOT EXISTS vector')
    op.create_table(
        'knowledge_bases',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('tags', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
        sa.Column('visibility', sa.Text(), server_default='private', nullable=False),
        sa.Column('embedding_provider', sa.Text(), nullable=False),
        sa.Column('embedding_model', sa.Text(), nullable=False),
        sa.Column('embedding_dimension', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_knowledge_bases_owner_created', 'knowledge_bases', ['owner_id', 'created_at'])
    op.create_index('ix_knowledge_bases_tags', 'knowledge_bases', ['tags'], postgresql_using='gin')
    op.create_index('ix_knowledge_bases_public', 'knowledge_bases', ['created_at'],
                    postgresql_where=sa.text("visibility = 'public'"))
    op.create_table(
        'documents',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('knowledge_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('filename', sa.Text(), nullable=False),
        sa.Column('content_type', sa.Text(), nullable=True),
        sa.Column('file_type', sa.Text(), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.Text(), nullable=False),
        sa.Column('storage_key', sa.Text(), nullable=False),
        sa.Column('status', sa.Text(), server_default='processing', nullable=False),
        sa.Column('progress', sa.Float(), server_default='0', nullable=False),
        sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column('chunk_count', sa.Integer(), server_default='0', nullable=False),
        sa.Column('page_count', sa.Integer(), nullable=True),
        sa.Column('word_count', sa.Integer(), nullable=True),
        sa.Column('processing_ms', sa.Float(), nullable=True),
        sa.Column('job_id', sa.UUID(as_uuid=False), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['knowledge_id'], ['knowledge_bases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('uq_documents_knowledge_sha256', 'documents', ['knowledge_id', 'sha256'], unique=True)
    op.create_index('ix_documents_knowledge_created', 'documents', ['knowledge_id', 'created_at'])
    op.create_index('ix_documents_metadata', 'documents', ['metadata'], postgresql_using='gin')
    op.create_table(
        'chunks',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('document_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('knowledge_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('idx', sa.Integer(), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('title', sa.Text(), nullable=True),
        sa.Column('page', sa.Integer(), nullable=True),
        sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column('dimension', sa.SmallInteger(), nullable=False),
        sa.Column('embedding', Vector(), nullable=False),
        sa.Column('tsv', postgresql.TSVECTOR(), sa.Computed(
            "setweight(to_tsvector('english', coalesce(title, '')), 'A') || "
            "setweight(to_tsvector('english', content), 'B')", persisted=True), nullable=True),
        sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_chunks_document_idx', 'chunks', ['document_id', 'idx'])
    op.create_index('ix_chunks_knowledge', 'chunks', ['knowledge_id'])
    op.create_index('ix_chunks_tsv', 'chunks', ['tsv'], postgresql_using='gin')
    for dimension, kind in HNSW_DIMENSIONS.items():
        op.execute(
            f'CREATE INDEX ix_chunks_embedding_{dimension} ON chunks USING hnsw '
            f'((embedding::{kind}({dimension})) {kind}_cosine_ops) WHERE dimension = {dimension}')


def downgrade() -> None:
    op.drop_table('chunks')
    op.drop_table('documents')
    op.drop_table('knowledge_bases')
