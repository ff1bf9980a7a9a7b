"""Conversations: stored chat histories, continued turn by turn, measured and pruned."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import conversation_turns as turns_api
from api.bodies import int_query, parse, path_id
from api.context import principal, services
from api.errors import ApiError
from api.formats.own import NamedEventWriter, text_delta
from api.job_control import submit_job
from api.job_replies import event_stream, open_chat, whole_answer
from api.openapi import doc
from api.routes.jobs import job_read
from pipelines.conversations import require_found, token_usage
from pipelines.db import conversations as conversations_db
from pipelines.errors import ConversationNotFound, ModelNotFound
from schemas.conversations import (
    ConversationCreate,
    ConversationList,
    ConversationRead,
    ConversationUpdate,
    MessageCreate,
    MessageRead,
    MessageReply,
    PruneJob,
    PruneRequest,
    TokenUsage,
)
from schemas.jobs import JobRead

_MAX_PAGE = 100


def _read(row: Row[Any], turns: Sequence[Row[Any]] | None = None) -> ConversationRead:
    return ConversationRead(
        id=str(row.id), title=row.title, model=row.model, system_prompt=row.system_prompt,
        message_count=row.message_count, created_at=row.created_at, updated_at=row.updated_at,
        last_pruning=row.last_pruning,
        messages=None if turns is None else [
            MessageRead(id=t.id, role=t.role, content=t.content, tokens=t.tokens,
                        created_at=t.created_at, job_id=str(t.job_id) if t.job_id else None)
            for t in turns],
    )


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _id(request: Request) -> str:
    return path_id(request, "conversation_id", ConversationNotFound, "conversation")


@doc("Create a conversation", body=ConversationCreate, response=ConversationRead, status=201,
     tags=["conversations"])
async def create_conversation(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, ConversationCreate, svc.settings.max_json_body_bytes)
    await svc.models.resolve(body.model)
    async with svc.engine.begin() as conn:
        row = (await conn.execute(conversations_db.insert_conversation(
            conversation_id=conversations_db.new_conversation_id(),
            owner_id=principal(request).owner_id, model=body.model, title=body.title,
            system_prompt=body.system_prompt))).one()
    return _json(_read(row), status=201)



def _choice(request: Request, name: str, default: str, allowed: Iterable[str]) -> str:
    value = request.query_params.get(name, default)
    if value not in allowed:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"{name} must be one of {', '.join(sorted(allowed))}.", param=name)
    return value


@doc("List conversations", response=ConversationList, tags=["conversations"],
     query={"limit": "integer", "offset": "integer", "sort": "string", "order": "string"})
async def list_conversations(request: Request) -> Response:
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 2**31 - 1)
    sort = _choice(request, "sort", "updated_at", conversations_db.SORTABLE)
    order = _choice(request, "order", "desc", ("asc", "desc"))
    owner_id = principal(request).owner_id
    async with services(request).autocommit.connect() as conn:
        total = (await conn.execute(conversations_db.count_for_owner(owner_id))).scalar_one()
        rows = (await conn.execute(conversations_db.list_for_owner(
            owner_id, limit=limit, offset=offset, sort=sort, descending=order == "desc"))).all()
    return _json(ConversationList(conversations=[_read(row) for row in rows], total=total,
                                  limit=limit, offset=offset))


@doc("A conversation with its messages", response=ConversationRead, tags=["conversations"])
async def get_conversation(request: Request) -> Response:
    row, turns = await turns_api.load(services(request), principal(request).owner_id,
                                      _id(request))
    return _json(_read(row, turns))


@doc("Change a conversation's title, model or system prompt", body=ConversationUpdate,
     response=ConversationRead, tags=["conversations"])
async def update_conversation(request: Request) -> Response:
    svc = services(request)
    conversation_id = _id(request)
    body = await parse(request, ConversationUpdate, svc.settings.max_json_body_bytes)
    values = body.model_dump(include=body.model_fields_set)
    if "model" in values:
        if values["model"] is None:
            raise ApiError(422, "VALIDATION_FAILED", "model cannot be null.", param="model")
        await svc.models.resolve(values["model"])
    owner_id = principal(request).owner_id
    if values:
        async with svc.engine.begin() as conn:
            require_found((await conn.execute(conversations_db.update_conversation(
                conversation_id, owner_id, values))).first(), conversation_id)
    row, _ = await turns_api.load(svc, owner_id, conversation_id, with_messages=False)
    return _json(_read(row))


@doc("Delete a conversation and its messages", status=204, tags=["conversations"])
async def delete_conversation(request: Request) -> Response:
    conversation_id = _id(request)
    async with services(request).engine.begin() as conn:
        require_found((await conn.execute(conversations_db.delete_conversation(
            conversation_id, principal(request).owner_id))).first(), conversation_id)
    return Response(status_code=204)


@doc("Add a user turn and get the model's reply (SSE `text-delta`, `finish` if stream)",
     body=MessageCreate, response=MessageReply, streams=True, tags=["conversations"])
async def post_message(request: Request) -> Response:
    svc = services(request)
    conversation_id = _id(request)
    body = await parse(request, MessageCreate, svc.settings.max_json_body_bytes)
    owner = principal(request)
    base = body.model_dump(exclude_none=True, exclude={"content", "stream"})
    job_input, store_turns = await turns_api.continue_conversation(
        svc, owner.owner_id, conversation_id, base, [{"role": "user", "content": body.content}])
    # Hanging up does not cancel the turn: the worker stores the reply either way.
    stream = await open_chat(request, job_input, streamed=body.stream,
                             cancel_on_disconnect=False, on_submit=store_turns)
    job_id = stream.job_id

    def reply(result: dict[str, Any]) -> dict[str, Any]:
        return _reply(result, conversation_id, job_id)

    if body.stream:
        return event_stream(stream, NamedEventWriter(job_id, text_delta, reply))
    return await whole_answer(request, stream, reply)


def _reply(result: dict[str, Any], conversation_id: str, job_id: str) -> dict[str, Any]:
    usage = result.get("usage") or {}
    return MessageReply(
        conversation_id=conversation_id, job_id=job_id,
        message={"role": "assistant", "content": result.get("content") or ""},
        finish_reason=result.get("finish_reason") or "stop",
        usage={key: int(usage.get(key) or 0)
               for key in ("prompt_tokens", "completion_tokens", "total_tokens")},
    ).model_dump()


@doc("Tokens the conversation's history costs, by role and against the context window",
     response=TokenUsage, tags=["conversations"])
async def conversation_token_usage(request: Request) -> Response:
    svc = services(request)
    conversation, turns = await turns_api.load(svc, principal(request).owner_id, _id(request))
    try:
        context_limit: int | None = (await svc.models.get(conversation.model)).context_window
    except ModelNotFound:
        context_limit = None
    usage = token_usage(conversation.model, conversation.system_prompt, turns, context_limit)
    return _json(TokenUsage(**usage, last_pruning=conversation.last_pruning))


@doc("Summarise the oldest turns into one system message: a `prune` job whose result is "
     "{conversation_id, messages_pruned, messages_kept, tokens_before, tokens_after, "
     "summary, model}", body=PruneRequest, response=JobRead, status=202,
     tags=["conversations"])
async def prune_conversation(request: Request) -> Response:
    svc = services(request)
    conversation_id = _id(request)
    body = await parse(request, PruneRequest, svc.settings.max_json_body_bytes,
                       allow_empty=True)
    owner = principal(request)
    conversation, _ = await turns_api.load(svc, owner.owner_id, conversation_id,
                                           with_messages=False)
    await svc.models.resolve(body.model or conversation.model)
    spec = PruneJob(conversation_id=conversation_id, **body.model_dump())
    row, _ = await submit_job(svc, kind="prune", owner_id=owner.owner_id,
                              input=spec.model_dump(exclude_none=True), key_id=owner.key_id)
    return Response(job_read(row).model_dump_json(), status_code=202,
                    media_type="application/json", headers={"Location": f"/v1/jobs/{row.id}"})


_ONE = "/v1/conversations/{conversation_id}"
routes = [
    Route("/v1/conversations", create_conversation, methods=["POST"]),
    Route("/v1/conversations", list_conversations, methods=["GET"]),
    Route(_ONE, get_conversation, methods=["GET"]),
    Route(_ONE, update_conversation, methods=["PATCH"]),
    Route(_ONE, delete_conversation, methods=["DELETE"]),
    Route(_ONE + "/messages", post_message, methods=["POST"]),
    Route(_ONE + "/token-usage", conversation_token_usage, methods=["GET"]),
    Route(_ONE + "/prune", prune_conversation, methods=["POST"]),
]
