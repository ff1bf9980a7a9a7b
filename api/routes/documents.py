"""Documents: upload into a base (stored, then ingested by a job), list, read, re-ingest,
delete.

An upload is refused while it streams in once it passes the size limit (413), and before
anything is stored if its type cannot be ingested (415). The file is stored in the job's
own transaction, next to the document row (the default Postgres store writes its bytes on
that connection, so both commit or neither does); if the same bytes are already in the
base, the transaction rolls back, an externally stored copy is removed, and the answer is
409 with the existing document. A direct upload's file is already stored; its confirm
(api/routes/uploads.py) writes the document row and job the same way.
"""

from __future__ import annotations

from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from api.bodies import int_query, json_response, parse_json, path_id
from api.context import principal, services
from api.errors import ApiError
from api.job_control import cancel_job, submit_job
from api.knowledge_access import document_read, load_base, load_document
from api.openapi import doc
from api.routes.jobs import job_read
from pipelines.db import knowledge as knowledge_db
from pipelines.errors import (
    DocumentNotFound,
    DuplicateDocument,
    KnowledgeBaseNotFound,
    UnsupportedFileType,
)
from pipelines.ingest.partition import SUPPORTED_TYPES, detect_file_type
from pipelines.storage import StoredFile, document_key
from schemas.knowledge import DocumentAccepted, DocumentList, DocumentRead, IngestJob

# Room for the multipart framing and the `metadata` field on top of the file itself.
_FORM_OVERHEAD_BYTES = 1024 * 1024 + 64 * 1024
_MAX_METADATA_BYTES = 1024 * 1024


def too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE",
                    f"The file is larger than the upload limit of {limit} bytes.")


async def read_upload_form(request: Request, limit: int) -> FormData:
    """The multipart form, counting bytes as they arrive so an oversized upload stops early
    instead of being spooled to disk whole first."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "Upload with Content-Type multipart/form-data (a `file` field).")
    ceiling = limit + _FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > ceiling:
        raise too_large(limit)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > ceiling:
                raise too_large(limit)
        return message

    limited = Request(request.scope, receive)
    return await limited.form(max_files=1, max_fields=8, max_part_size=_MAX_METADATA_BYTES)


def _base_id(request: Request) -> str:
    return path_id(request, "knowledge_id", KnowledgeBaseNotFound, "knowledge base")


def _document_id(request: Request) -> str:
    return path_id(request, "document_id", DocumentNotFound, "document")


def _metadata(form: FormData) -> dict[str, Any]:
    raw = form.get("metadata")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise ApiError(422, "VALIDATION_FAILED", "metadata must be a JSON object, not a file.",
                       param="metadata")
    value = parse_json(raw, "metadata", param="metadata")
    if not isinstance(value, dict):
        raise ApiError(422, "VALIDATION_FAILED", "metadata must be a JSON object.",
                       param="metadata")
    return value


def accepted(document: Any, job: Any) -> Response:
    body = DocumentAccepted(document=document_read(document), job=job_read(job))
    return json_response(body, status=202, headers={"Location": f"/v1/documents/{document.id}",
                                                    "X-Job-ID": str(job.id)})


@doc("Upload a document (multipart `file`, optional `metadata` JSON object); 202 with the "
     "document and its ingest job", response=DocumentAccepted, status=202,
     tags=["knowledge"])
async def upload_document(request: Request) -> Response:
    svc = services(request)
    who = principal(request)
    base_id = _base_id(request)
    await load_base(svc, who.owner_id, base_id, write=True)
    limit = svc.settings.max_upload_bytes
    form = await read_upload_form(request, limit)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ApiError(422, "VALIDATION_FAILED", "The form needs a `file` field with a file.",
                           param="file")
        if upload.size is not None and upload.size > limit:
            raise too_large(limit)
        filename = upload.filename.replace("\x00", "")[:255]
        file_type = detect_file_type(filename, upload.content_type)
        if file_type is None:
            raise UnsupportedFileType(
                f"{filename!r} ({upload.content_type or 'no content type'}) cannot be "
                f"ingested; supported: {', '.join(sorted(SUPPORTED_TYPES))}.")
        metadata = _metadata(form)
        document_id = knowledge_db.new_id()
        key = document_key(document_id, filename)
        created: Any = None

        async def insert_document(conn: AsyncConnection, job_id: str) -> None:
            nonlocal created
            stored = await svc.file_store.save(conn, key, upload.file,
                                               content_type=upload.content_type)
            if stored.size_bytes > limit:  # a body without a declared length
                raise too_large(limit)
            created = await insert_document_row(
                conn, document_id=document_id, base_id=base_id, owner_id=who.owner_id,
                filename=filename, content_type=upload.content_type, file_type=file_type,
                stored=stored, metadata=metadata, job_id=job_id)

        try:
            job, _ = await submit_job(
                svc, kind="ingest", owner_id=who.owner_id, key_id=who.key_id,
                input=IngestJob(document_id=document_id, knowledge_id=base_id).model_dump(),
                on_submit=insert_document)
        except BaseException:
            await anyio.to_thread.run_sync(svc.file_store.discard, [key])
            raise
    finally:
        await form.close()
    return accepted(created, job)


async def insert_document_row(conn: AsyncConnection, *, document_id: str, base_id: str,
                              owner_id: str, filename: str, content_type: str | None,
                              file_type: str, stored: StoredFile, metadata: dict[str, Any],
                              job_id: str) -> Any:
    """The document row for a stored file, in the job's transaction; 409 (rolling the
    transaction back) when the base already holds the same bytes."""
    created = (await conn.execute(knowledge_db.insert_document(
        document_id=document_id, knowledge_id=base_id, owner_id=owner_id,
        filename=filename, content_type=content_type, file_type=file_type,
        size_bytes=stored.size_bytes, sha256=stored.sha256, storage_key=stored.key,
        metadata=metadata, job_id=job_id))).first()
    if created is None:
        existing = (await conn.execute(
            knowledge_db.document_by_hash(base_id, stored.sha256))).one()
        raise DuplicateDocument(
            f"This file is already in the knowledge base as '{existing.filename}'.",
            details={"document": document_read(existing).model_dump(mode="json")})
    return created


@doc("List a knowledge base's documents", response=DocumentList, tags=["knowledge"],
     query={"status": "string", "limit": "integer", "offset": "integer"})
async def list_documents(request: Request) -> Response:
    svc = services(request)
    base = await load_base(svc, principal(request).owner_id, _base_id(request))
    limit = int_query(request, "limit", 50, 1, 200)
    offset = int_query(request, "offset", 0, 0, 2**31 - 1)
    status = request.query_params.get("status") or None
    if status not in (None, "processing", "processed", "failed"):
        raise ApiError(422, "VALIDATION_FAILED",
                       "status must be one of processing, processed, failed.", param="status")
    async with svc.autocommit.connect() as conn:
        total = (await conn.execute(knowledge_db.count_documents(
            str(base.id), status=status))).scalar_one()
        rows = (await conn.execute(knowledge_db.list_documents(
            str(base.id), status=status, limit=limit, offset=offset))).all()
    return json_response(DocumentList(data=[document_read(r) for r in rows], total=total,
                                      limit=limit, offset=offset))


@doc("A document: status, progress, chunk count, error, metadata (pages, word count)",
     response=DocumentRead, tags=["knowledge"])
async def get_document(request: Request) -> Response:
    row = await load_document(services(request), principal(request).owner_id,
                              _document_id(request))
    return json_response(document_read(row))


@doc("Ingest a document again (its chunks are replaced when the new job finishes)",
     response=DocumentAccepted, status=202, tags=["knowledge"])
async def reingest_document(request: Request) -> Response:
    svc = services(request)
    who = principal(request)
    row = await load_document(svc, who.owner_id, _document_id(request), write=True)
    restarted: Any = None

    async def restart(conn: AsyncConnection, job_id: str) -> None:
        nonlocal restarted
        restarted = (await conn.execute(knowledge_db.restart_document(
            str(row.id), who.owner_id, job_id))).first()
        if restarted is None:
            raise DocumentNotFound(f"No document with id '{row.id}'.")

    job, _ = await submit_job(
        svc, kind="ingest", owner_id=who.owner_id, key_id=who.key_id,
        input=IngestJob(document_id=str(row.id), knowledge_id=str(row.knowledge_id)).model_dump(),
        on_submit=restart)
    if row.status == "processing" and row.job_id:
        await cancel_job(svc, str(row.job_id), who.owner_id, "superseded by a re-ingest")
    return accepted(restarted, job)


@doc("Delete a document with its chunks and its file", status=204, tags=["knowledge"])
async def delete_document(request: Request) -> Response:
    svc = services(request)
    who = principal(request)
    row = await load_document(svc, who.owner_id, _document_id(request), write=True)
    async with svc.engine.begin() as conn:
        deleted = (await conn.execute(knowledge_db.delete_document(str(row.id),
                                                                   who.owner_id))).first()
    if deleted is None:
        raise DocumentNotFound(f"No document with id '{row.id}'.")
    # Postgres-stored bytes went with the row (a trigger); an external store's go now.
    await anyio.to_thread.run_sync(svc.file_store.discard, [deleted.storage_key])
    if deleted.status == "processing" and deleted.job_id:
        await cancel_job(svc, str(deleted.job_id), who.owner_id, "document deleted")
    return Response(status_code=204)


routes = [
    Route("/v1/knowledge/{knowledge_id}/documents", upload_document, methods=["POST"]),
    Route("/v1/knowledge/{knowledge_id}/documents", list_documents, methods=["GET"]),
    Route("/v1/documents/{document_id}", get_document, methods=["GET"]),
    Route("/v1/documents/{document_id}", delete_document, methods=["DELETE"]),
    Route("/v1/documents/{document_id}/reingest", reingest_document, methods=["POST"]),
]
