"""Knowledge bases: create, list, read, change, delete; and search across several."""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import int_query, json_response, parse, path_id
from api.context import principal, services
from api.errors import ApiError
from api.knowledge_access import (
    embed_query,
    knowledge_read,
    load_base,
    search_groups,
)
from api.openapi import doc
from pipelines import retrieve
from pipelines.db import files as files_db
from pipelines.db import knowledge as knowledge_db
from pipelines.errors import KnowledgeBaseNotFound
from schemas.fields import canonical_uuid
from schemas.knowledge import (
    KnowledgeCreate,
    KnowledgeList,
    KnowledgeRead,
    KnowledgeUpdate,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SearchResult,
)

_MAX_PAGE = 100



def _choice(request: Request, name: str, allowed: tuple[str, ...],
            default: str | None = None) -> str | None:
    value = request.query_params.get(name, default)
    if value is not None and value not in allowed:
        raise ApiError(422, "VALIDATION_FAILED", f"{name} must be one of {', '.join(allowed)}.",
                       param=name)
    return value


def _base_id(request: Request) -> str:
    return path_id(request, "knowledge_id", KnowledgeBaseNotFound, "knowledge base")


@doc("Create a knowledge base (embedding model fixed at creation)", body=KnowledgeCreate,
     response=KnowledgeRead, status=201, tags=["knowledge"])
async def create_base(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, KnowledgeCreate, svc.settings.max_json_body_bytes)
    spec = svc.embedders.default
    async with svc.engine.begin() as conn:
        row = (await conn.execute(knowledge_db.insert_base(
            base_id=knowledge_db.new_id(), owner_id=principal(request).owner_id,
            name=body.name, description=body.description, tags=body.tags,
            visibility=body.visibility, embedding_provider=spec.provider,
            embedding_model=spec.model, embedding_dimension=spec.dimension))).one()
    return json_response(knowledge_read(row), status=201)


@doc("List knowledge bases: your own, or with owner=any also everyone's public ones",
     response=KnowledgeList, tags=["knowledge"],
     query={"tag": "string", "search": "string", "visibility": "string", "owner": "string",
            "limit": "integer", "offset": "integer"})
async def list_bases(request: Request) -> Response:
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 2**31 - 1)
    filters: dict[str, Any] = {
        "include_public": _choice(request, "owner", ("me", "any"), "me") == "any",
        "tag": request.query_params.get("tag") or None,
        "search": request.query_params.get("search") or None,
        "visibility": _choice(request, "visibility", ("private", "public")),
    }
    owner_id = principal(request).owner_id
    async with services(request).autocommit.connect() as conn:
        total = (await conn.execute(knowledge_db.count_bases(owner_id, **filters))).scalar_one()
        rows = (await conn.execute(knowledge_db.list_bases(
            owner_id, limit=limit, offset=offset, **filters))).all()
    return json_response(KnowledgeList(data=[knowledge_read(r) for r in rows], total=total,
                                       limit=limit, offset=offset))


@doc("A knowledge base with its document and chunk counts", response=KnowledgeRead,
     tags=["knowledge"])
async def get_base(request: Request) -> Response:
    row = await load_base(services(request), principal(request).owner_id, _base_id(request))
    return json_response(knowledge_read(row))


@doc("Change a knowledge base's name, description, tags or visibility", body=KnowledgeUpdate,
     response=KnowledgeRead, tags=["knowledge"])
async def update_base(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    base_id = _base_id(request)
    await load_base(svc, owner_id, base_id, write=True)
    body = await parse(request, KnowledgeUpdate, svc.settings.max_json_body_bytes)
    values = body.model_dump(exclude_unset=True)
    for field in ("name", "tags", "visibility"):
        if field in values and values[field] is None:
            raise ApiError(422, "VALIDATION_FAILED", f"{field} cannot be null.", param=field)
    if values:
        async with svc.engine.begin() as conn:
            await conn.execute(knowledge_db.update_base(base_id, owner_id, values))
    return json_response(knowledge_read(await load_base(svc, owner_id, base_id)))


@doc("Delete a knowledge base with its documents, chunks and files", status=204,
     tags=["knowledge"])
async def delete_base(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    base_id = _base_id(request)
    await load_base(svc, owner_id, base_id, write=True)
    async with svc.engine.begin() as conn:
        keys = [*(await conn.execute(knowledge_db.storage_keys_of_base(base_id))).scalars(),
                *(await conn.execute(files_db.pending_upload_keys_of_base(base_id))).scalars()]
        deleted = (await conn.execute(knowledge_db.delete_base(base_id, owner_id))).first()
    if deleted is None:
        raise KnowledgeBaseNotFound(f"No knowledge base with id '{base_id}'.")
    # Postgres-stored bytes went with the rows (triggers); an external store's go now.
    await anyio.to_thread.run_sync(svc.file_store.discard, keys)
    return Response(status_code=204)


def filter_args(filters: SearchFilters | None) -> dict[str, Any]:
    """Search filters as keyword arguments of the chunk queries."""
    filters = filters or SearchFilters()
    if filters.document_ids and any(canonical_uuid(d) is None for d in filters.document_ids):
        raise ApiError(422, "VALIDATION_FAILED", "filters.document_ids must be document ids.",
                       param="filters.document_ids")
    return {"tags": filters.tags, "document_types": filters.document_types,
            "document_ids": filters.document_ids, "metadata": filters.metadata}


async def run_search(request: Request, query: str, knowledge_ids: list[str], mode: str,
                     limit: int, filters: SearchFilters | None) -> list[retrieve.Hit]:
    """Search the caller's readable bases (any other id is a 404)."""
    svc = services(request)
    args = filter_args(filters)
    groups = await search_groups(svc, principal(request).owner_id, knowledge_ids)
    vectors = {} if mode == "keyword" else await embed_query(svc, list(groups), query)
    return await retrieve.search(svc.engine, groups, query, vectors, mode=mode, limit=limit,
                                 filters=args, ef_search=svc.settings.hnsw_ef_search)


@doc("Search chunks across knowledge bases: vector, keyword or hybrid (RRF)",
     body=SearchRequest, response=SearchResponse, tags=["knowledge"])
async def search(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, SearchRequest, svc.settings.max_json_body_bytes)
    started = time.perf_counter()
    hits = await run_search(request, body.query, body.knowledge_ids, body.mode, body.limit,
                            body.filters)
    results = [SearchResult(chunk_id=h.chunk_id, document_id=h.document_id,
                            knowledge_id=h.knowledge_id, title=h.title, content=h.content,
                            score=h.score, vector_score=h.vector_score,
                            keyword_score=h.keyword_score, metadata=h.metadata)
               for h in hits]
    return json_response(SearchResponse(
        results=results, total_results=len(results), mode=body.mode,
        query_time=round((time.perf_counter() - started) * 1000, 2)))


routes = [
    Route("/v1/knowledge", create_base, methods=["POST"]),
    Route("/v1/knowledge", list_bases, methods=["GET"]),
    Route("/v1/knowledge/search", search, methods=["POST"]),
    Route("/v1/knowledge/{knowledge_id}", get_base, methods=["GET"]),
    Route("/v1/knowledge/{knowledge_id}", update_base, methods=["PATCH"]),
    Route("/v1/knowledge/{knowledge_id}", delete_base, methods=["DELETE"]),
]
