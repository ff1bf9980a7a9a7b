"""Runs one built-in tool call of an agent's turn in the worker, on its event loop.

`knowledge_search` searches the agent's bases (hybrid) with the worker's embedders, as a
chain step with knowledge does; `http_get` goes through the outbound guard with the
worker's policy plus the tool's own allow-list. CPU-bound work (embedding the query) runs
in a thread so the loop keeps serving other turns.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from pipelines import agent_tools, outbound, retrieve
from pipelines.agent_items import Call
from pipelines.db import knowledge as knowledge_db
from pipelines.embedders.registry import EmbeddingSpec
from workers.resources import Resources

HTTP_GET_MAX_BYTES = 64 * 1024
HTTP_GET_TIMEOUT_S = 10.0
_MAX_OUTPUT_CHARS = 32_000


@dataclass(slots=True)
class ToolOutcome:
    output: str
    error: str | None
    execution_time_ms: float
    sources: list[dict[str, Any]] | None = None


async def run_builtin(res: Resources, owner_id: str, agent: Any, tool: dict[str, Any],
                      call: Call) -> ToolOutcome:
    """The outcome of `call`; a tool's own failure is an error result, never an exception."""
    started = time.perf_counter()
    sources: list[dict[str, Any]] | None = None
    try:
        arguments = _arguments(call.arguments)
        name = tool["type"]
        if name == "calculator":
            output = agent_tools.calculator(arguments)
        elif name == "current_time":
            output = agent_tools.current_time(arguments)
        elif name == "knowledge_search":
            output, sources = await _knowledge_search(res, owner_id, list(agent.knowledge_ids),
                                                      arguments)
        elif name == "http_get":
            policy = outbound.OutboundPolicy.of(res.settings.outbound_allow_private,
                                                res.settings.outbound_allowed_hosts)
            output = await agent_tools.http_get(
                arguments, allowed_hosts=list(tool.get("allowed_hosts") or ()), policy=policy,
                max_bytes=HTTP_GET_MAX_BYTES, timeout_s=HTTP_GET_TIMEOUT_S)
        else:
            raise agent_tools.ToolFailed(f"unknown tool '{name}'")
        error = None
    except agent_tools.ToolFailed as exc:
        output, error = "", str(exc)
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    return ToolOutcome(output[:_MAX_OUTPUT_CHARS], error, elapsed, sources)


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        raise agent_tools.ToolFailed("the tool arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise agent_tools.ToolFailed("the tool arguments must be a JSON object")
    return value


async def _knowledge_search(res: Resources, owner_id: str, knowledge_ids: list[str],
                            arguments: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    query = str(arguments.get("query") or "").strip()
    if not query:
        raise agent_tools.ToolFailed("knowledge_search needs a 'query'")
    if not knowledge_ids:
        raise agent_tools.ToolFailed("this agent has no knowledge bases")
    try:
        limit = max(1, min(int(arguments.get("limit") or 5), 20))
    except (TypeError, ValueError):
        limit = 5
    async with res.aautocommit.connect() as conn:
        bases = (await conn.execute(knowledge_db.readable_bases(knowledge_ids, owner_id))).all()
    if not bases:
        raise agent_tools.ToolFailed("none of this agent's knowledge bases can be read")
    groups: dict[EmbeddingSpec, list[str]] = {}
    for base in bases:
        spec = EmbeddingSpec(base.embedding_provider, base.embedding_model,
                             base.embedding_dimension)
        groups.setdefault(spec, []).append(str(base.id))
    vectors = {spec: (await asyncio.to_thread(res.embedders.get(spec).embed, [query]))[0]
               for spec in groups}
    hits = await retrieve.search(res.aengine, groups, query, vectors, mode="hybrid",
                                 limit=limit,
                                 filters={"tags": None, "document_types": None,
                                          "document_ids": None, "metadata": None})
    sources = [{"chunk_id": h.chunk_id, "document_id": h.document_id,
                "knowledge_id": h.knowledge_id, "title": h.title or h.filename,
                "page": h.page, "score": h.score} for h in hits]
    if not hits:
        return "No passages matched.", sources
    text = "\n\n".join(f"[{i}] {hit.title or hit.filename or ''}\n{hit.content}".strip()
                       for i, hit in enumerate(hits, 1))
    return text, sources
