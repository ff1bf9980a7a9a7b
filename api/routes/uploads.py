"""Direct uploads (AI Studio's presigned upload): ask for a URL, send the file there, confirm.

1. `POST /v1/uploads {file_name, file_type, file_size, knowledge_id}` checks the size (413)
   and type (415) and records a pending upload. With an S3 store the answer is a presigned
   POST whose policy pins the key, content type and size range, so the bytes never pass
   through Switchyard; otherwise it is Switchyard's own URL, `POST /uploads/{id}`, with a
   signed `token` field, valid until `expires_at` and usable once.
2. The client POSTs the `fields` and then the `file` there (multipart), as it would to S3.
   `/uploads/{id}` is outside `/v1`: the token is its credential, so a browser can upload
   without an API key, as with a presigned S3 URL.
3. `POST /v1/knowledge/{id}/documents/confirm {file_key}` checks the stored file again
   (size against the declared size and the limit, content type, that it exists), then
   writes the document row and its `ingest` job in one transaction, like a multipart
   upload. An upload not confirmed before it expires is deleted with its bytes by the
   workers' sweeper (workers/sweeper.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import json_response, parse, path_id
from api.context import Services, principal, services
from api.errors import ApiError
from api.job_control import submit_job
from api.knowledge_access import load_base
from api.openapi import doc
from api.routes.documents import (
    accepted,
    insert_document_row,
    read_upload_form,
    too_large,
)
from pipelines import accounts
from pipelines.db import files as files_db
from pipelines.db import knowledge as knowledge_db
from pipelines.errors import Conflict, KnowledgeBaseNotFound, NotFound, UnsupportedFileType
from pipelines.ingest.partition import SUPPORTED_TYPES, detect_file_type
from pipelines.storage import DirectUpload, StoredFile, upload_key
from pipelines.uploads import sign_upload, token_matches
from schemas.fields import canonical_uuid
from schemas.knowledge import DocumentAccepted, IngestJob
from schemas.uploads import DocumentConfirm, UploadCreate, UploadTicket

_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}


class UploadNotFound(NotFound): ...


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _expired() -> ApiError:
    return ApiError(410, "UPLOAD_EXPIRED",
                    "This upload has expired or its URL was already used; ask for a new one.")


def _secret(request: Request) -> str:
    secret = services(request).settings.switchyard_secret_key
    return accounts.secret_key_or_dev(secret.get_secret_value() if secret else None)


def _unsupported(file_name: str, file_type: str) -> UnsupportedFileType:
    return UnsupportedFileType(
        f"{file_name!r} ({file_type or 'no content type'}) cannot be ingested; supported: "
        f"{', '.join(sorted(SUPPORTED_TYPES))}.")


@doc("Ask for a direct upload URL (presigned S3 POST, or a signed single-use Switchyard "
     "URL); send `fields` and then `file` there as multipart, then confirm the `file_key`",
     body=UploadCreate, response=UploadTicket, status=201, tags=["knowledge"])
async def create_upload(request: Request) -> Response:
    svc = services(request)
    who = principal(request)
    body = await parse(request, UploadCreate, svc.settings.max_json_body_bytes)
    base_id = canonical_uuid(body.knowledge_id)
    if base_id is None:
        raise KnowledgeBaseNotFound(f"No knowledge base with id '{body.knowledge_id}'.")
    await load_base(svc, who.owner_id, base_id, write=True)
    limit = svc.settings.max_upload_bytes
    if body.file_size > limit:
        raise too_large(limit)
    file_name = body.file_name.replace("\x00", "")
    content_type = _media_type(body.file_type)
    file_type = detect_file_type(file_name, content_type)
    if file_type is None:
        raise _unsupported(file_name, content_type)
    upload_id = files_db.new_upload_id()
    key = upload_key(upload_id, file_name)
    ttl_s = svc.settings.upload_url_ttl_s
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=ttl_s)
    store = svc.file_store
    direct = await anyio.to_thread.run_sync(lambda: store.direct_upload(
        key, content_type=content_type, max_bytes=body.file_size, expires_s=ttl_s))
    if direct is None:
        base_url = (svc.settings.public_base_url or str(request.base_url)).rstrip("/")
        direct = DirectUpload(url=f"{base_url}/uploads/{upload_id}",
                              fields={"token": sign_upload(_secret(request), upload_id,
                                                           expires_at)})
    async with svc.autocommit.connect() as conn:
        await conn.execute(files_db.insert_upload(
            upload_id=upload_id, owner_id=who.owner_id, knowledge_id=base_id, file_key=key,
            file_name=file_name, content_type=content_type, file_type=file_type,
            declared_size=body.file_size, expires_at=expires_at))
    return json_response(UploadTicket(
        upload_id=upload_id, upload_url=direct.url, file_key=key, fields=direct.fields,
        expires_at=expires_at, max_bytes=body.file_size, store=store.name), status=201)


@doc("Receive a direct upload's file (multipart: `token`, then `file`); 204. Single use, "
     "until the upload expires; the token is the credential", status=204,
     tags=["knowledge"])
async def receive_upload(request: Request) -> Response:
    svc = services(request)
    upload_id = path_id(request, "upload_id", UploadNotFound, "upload")
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(files_db.get_upload(upload_id))).first()
    if row is None:
        raise UploadNotFound(f"No upload with id '{upload_id}'.")
    form = await read_upload_form(request, row.declared_size)
    saving = False
    try:
        token = form.get("token")
        if not isinstance(token, str) or not token_matches(_secret(request), upload_id,
                                                           row.expires_at, token):
            raise ApiError(403, "INVALID_UPLOAD_TOKEN",
                           "The `token` field is missing or does not sign this upload.",
                           param="token")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "VALIDATION_FAILED", "The form needs a `file` field with a file.",
                           param="file")
        sent_type = _media_type(upload.content_type)
        if sent_type not in _GENERIC_TYPES and sent_type != row.content_type:
            raise UnsupportedFileType(
                f"The file was sent as {sent_type!r}; this upload was created for "
                f"{row.content_type!r}.")
        async with svc.engine.begin() as conn:
            if (await conn.execute(files_db.receive_upload(upload_id))).first() is None:
                raise _expired()
            saving = True
            stored = await svc.file_store.save(conn, row.file_key, upload.file,
                                               content_type=row.content_type)
            if stored.size_bytes > row.declared_size:
                raise too_large(row.declared_size)
            await conn.execute(files_db.record_received(upload_id, stored.size_bytes,
                                                        stored.sha256))
    except BaseException:
        if saving:  # an external store's partial or refused copy; Postgres rolled back
            await anyio.to_thread.run_sync(svc.file_store.discard, [row.file_key])
        raise
    finally:
        await form.close()
    return Response(status_code=204)


async def _check_stored(svc: Services, row: Any, limit: int) -> StoredFile:
    """The uploaded file as the store has it, checked again: there, within the declared size
    and the limit, of the declared content type."""
    async with svc.autocommit.connect() as conn:
        stored = await svc.file_store.describe(conn, row.file_key, limit)
    if stored is None:
        raise ApiError(409, "UPLOAD_INCOMPLETE",
                       "Nothing has been uploaded for this file_key yet.", param="file_key")
    if stored.size_bytes > limit:
        raise too_large(limit)
    if stored.size_bytes == 0:
        raise ApiError(422, "VALIDATION_FAILED", "The uploaded file is empty.",
                       param="file_key")
    if stored.content_type and _media_type(stored.content_type) != row.content_type:
        raise UnsupportedFileType(
            f"The stored file is {stored.content_type!r}; the upload was created for "
            f"{row.content_type!r}.")
    return stored


@doc("Confirm a direct upload: its file becomes a document and is ingested; 202 with the "
     "document and its job", body=DocumentConfirm, response=DocumentAccepted, status=202,
     tags=["knowledge"])
async def confirm_upload(request: Request) -> Response:
    svc = services(request)
    who = principal(request)
    base_id = path_id(request, "knowledge_id", KnowledgeBaseNotFound, "knowledge base")
    await load_base(svc, who.owner_id, base_id, write=True)
    body = await parse(request, DocumentConfirm, svc.settings.max_json_body_bytes)
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(files_db.upload_by_key(body.file_key, who.owner_id))).first()
    if row is None or str(row.knowledge_id) != base_id:
        raise UploadNotFound(f"No upload with file_key '{body.file_key}' in this knowledge "
                             "base.")
    if row.status == "confirmed":
        raise Conflict("This upload was already confirmed.",
                       details={"document_id": str(row.document_id)})
    if row.expires_at <= datetime.now(UTC):
        raise _expired()
    if body.file_name is not None and body.file_name != row.file_name:
        raise ApiError(422, "VALIDATION_FAILED", "file_name differs from the upload's.",
                       param="file_name")
    if body.file_type is not None and _media_type(body.file_type) != row.content_type:
        raise UnsupportedFileType(f"file_type {body.file_type!r} differs from the upload's "
                                  f"{row.content_type!r}.")
    stored = await _check_stored(svc, row, min(row.declared_size, svc.settings.max_upload_bytes))
    document_id = knowledge_db.new_id()
    created: Any = None

    async def insert_document(conn: AsyncConnection, job_id: str) -> None:
        nonlocal created
        if (await conn.execute(files_db.confirm_upload(str(row.id), document_id))).first() \
                is None:
            raise Conflict("This upload was confirmed meanwhile, or has just expired.")
        created = await insert_document_row(
            conn, document_id=document_id, base_id=base_id, owner_id=who.owner_id,
            filename=row.file_name, content_type=row.content_type, file_type=row.file_type,
            stored=stored, metadata=body.metadata, job_id=job_id)

    job, _ = await submit_job(
        svc, kind="ingest", owner_id=who.owner_id, key_id=who.key_id,
        input=IngestJob(document_id=document_id, knowledge_id=base_id).model_dump(),
        on_submit=insert_document)
    return accepted(created, job)


routes = [
    Route("/v1/uploads", create_upload, methods=["POST"]),
    Route("/uploads/{upload_id}", receive_upload, methods=["POST"]),
    Route("/v1/knowledge/{knowledge_id}/documents/confirm", confirm_upload, methods=["POST"]),
]
