"""file store: uploaded bytes in Postgres (stored_files, stored_file_chunks) and direct uploads

Revision ID: 0011_file_store
Revises: 0001
Depends on: 0005_knowledge

The default file store keeps a file as rows of at most 1 MiB (`stored_file_chunks`), so it
is written and read a piece at a time and never held whole in memory, in the same
transaction as the document row that points at it. Chunks are stored EXTERNAL (out of
line, uncompressed): uploads are mostly compressed formats already (PDF, DOCX), and
pglz would spend CPU on every write for nothing.

Triggers keep "never a file without its document" in the database itself: deleting a
document (or its knowledge base, by cascade) deletes its stored file in the same
transaction, and deleting a direct upload that was never confirmed deletes its staged
bytes. With an S3 store these tables stay empty and the triggers delete nothing.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_file_store'
down_revision = '0001'
branch_labels = None
depends_on = '0005_knowledge'


def upgrade() -> None:
    op.create_table(
        'stored_files',
        sa.Column('key', sa.Text(), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.Text(), nullable=False),
        sa.Column('chunk_count', sa.Integer(), nullable=False),
        sa.Column('content_type', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_table(
        'stored_file_chunks',
        sa.Column('key', sa.Text(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['key'], ['stored_files.key'], ondelete='CASCADE',
                                deferrable=True, initially='DEFERRED'),
        sa.PrimaryKeyConstraint('key', 'seq'),
    )
    op.execute('ALTER TABLE stored_file_chunks ALTER COLUMN data SET STORAGE EXTERNAL')
    op.create_table(
        'uploads',
        sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('owner_id', sa.Text(), nullable=False),
        sa.Column('knowledge_id', sa.UUID(as_uuid=False), nullable=False),
        sa.Column('file_key', sa.Text(), nullable=False),
        sa.Column('file_name', sa.Text(), nullable=False),
        sa.Column('content_type', sa.Text(), nullable=False),
        sa.Column('file_type', sa.Text(), nullable=False),
        sa.Column('declared_size', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.Text(), server_default='pending', nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=True),
        sa.Column('sha256', sa.Text(), nullable=True),
        sa.Column('document_id', sa.UUID(as_uuid=False), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.ForeignKeyConstraint(['knowledge_id'], ['knowledge_bases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('file_key', name='uq_uploads_file_key'),
    )
    op.create_index('ix_uploads_expires', 'uploads', ['expires_at'])
    op.execute("""
        CREATE FUNCTION switchyard_delete_document_file() RETURNS trigger AS $$
        BEGIN
            DELETE FROM stored_files WHERE key = OLD.storage_key;
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER documents_delete_file AFTER DELETE ON documents
        FOR EACH ROW EXECUTE FUNCTION switchyard_delete_document_file()
    """)
    op.execute("""
        CREATE FUNCTION switchyard_delete_upload_file() RETURNS trigger AS $$
        BEGIN
            IF OLD.status <> 'confirmed' THEN
                DELETE FROM stored_files WHERE key = OLD.file_key;
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER uploads_delete_file AFTER DELETE ON uploads
        FOR EACH ROW EXECUTE FUNCTION switchyard_delete_upload_file()
    """)


def downgrade() -> None:
    op.execute('DROP TRIGGER IF EXISTS uploads_delete_file ON uploads')
    op.execute('DROP FUNCTION IF EXISTS switchyard_delete_upload_file()')
    op.execute('DROP TRIGGER IF EXISTS documents_delete_file ON documents')
    op.execute('DROP FUNCTION IF EXISTS switchyard_delete_document_file()')
    op.drop_index('ix_uploads_expires', table_name='uploads')
    op.drop_table('uploads')
    op.drop_table('stored_file_chunks')
    op.drop_table('stored_files')
