"""OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, llama.cpp, our deployments).

Chat streams are read straight off the wire (httpx + orjson) rather than through the
`openai` SDK: the SDK builds a pydantic object per streamed chunk, which was the largest
per-token cost in a worker. The SDK stays for embeddings, where one call carries a batch.

Error mapping (see `retry.classify_status`): 401/403 → UpstreamError 502 that never names
the key; 429 → UpstreamRateLimited with Retry-After; 400/413/422 → UpstreamError 400 with
the upstream's reason, since the caller's request is passed through nearly as sent and the
caller can fix it; other 4xx → 502; 5xx, connection errors and timeouts before output →
retried here, then UpstreamUnavailable (UpstreamTimeout 504 for timeouts). An answer that
is not an OpenAI stream (an HTML page from a misconfigured base URL, say) is a 502.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import httpx
import openai
import orjson

from pipelines.errors import UpstreamError
from pipelines.ports import ChatChunk, ToolCallDelta, Usage
from pipelines.providers.retry import (
    call_with_retries,
    classify,
    classify_status,
    classify_transport,
    stream_with_retries,
)

# Request fields forwarded upstream; everything else (dev_options, conversation_id, …)
# is ours and must not reach a provider that would reject unknown fields.
PASSTHROUGH_FIELDS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "response_format",
    "reasoning_effort",
)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# One worker process holds hundreds of streams to the same upstream; httpx's default pool
# (100 connections) would queue the rest.
_MAX_CONNECTIONS = 2048
_ERROR_BODY_BYTES = 16_384


class MalformedUpstream(UpstreamError):
    """The upstream answered 200 with something that is not a chat completion."""


class OpenAIChatModel:
    """A ChatModel on the Chat Completions API, streaming with usage."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self._api_key = api_key
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        # Local OpenAI-compatible servers take no key; keys come from the model registry only.
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s), follow_redirects=False,
            limits=httpx.Limits(max_connections=_MAX_CONNECTIONS,
                                max_keepalive_connections=_MAX_CONNECTIONS),
            transport=transport)

    async def aclose(self) -> None:
        """Release the pooled connections."""
        await self._client.aclose()

    def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        """Stream a completion; see the module docstring for the failure policy."""
        params = {key: request[key] for key in PASSTHROUGH_FIELDS if request.get(key) is not None}
        params["model"] = self.model
        params["messages"] = request["messages"]
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        return stream_with_retries(
            partial(self._attempt, orjson.dumps(params)),
            self._classify,
            max_retries=self._max_retries,
            backoff_base_s=self._backoff_base_s,
            provider="openai",
        )

    def _classify(self, exc: BaseException) -> tuple[Exception, bool] | None:
        if isinstance(exc, _StatusError):
            return classify_status(exc.status, exc.headers, exc.detail, provider="openai",
                                   api_key=self._api_key)
        return classify_transport(exc, provider="openai", api_key=self._api_key)

    async def _attempt(self, body: bytes) -> AsyncIterator[ChatChunk]:
        async with self._client.stream("POST", self._url, content=body) as response:
            if response.status_code >= 400:
                raw = await _read_capped(response, _ERROR_BODY_BYTES)
                raise _StatusError(response.status_code, response.headers, _error_detail(raw))
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "application/json":
                # Some compatible servers ignore `stream` and answer whole.
                whole = _parse_json(await _read_capped(response, 64 * 1024 * 1024))
                for chunk in _whole_completion(whole):
                    yield chunk
                return
            if kind != "text/event-stream":
                raise MalformedUpstream(
                    f"openai upstream answered {kind or 'no content type'}, not an event stream",
                    status=502)
            async for chunk in _chunks(response.aiter_raw()):
                yield chunk


class _StatusError(Exception):
    def __init__(self, status: int, headers: httpx.Headers, detail: str) -> None:
        super().__init__(f"upstream status {status}")
        self.status = status
        self.headers = headers
        self.detail = detail


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    out = bytearray()
    async for piece in response.aiter_raw():
        out += piece
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def _error_detail(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    return raw[:200].decode(errors="replace")


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedUpstream("openai upstream sent a body that is not JSON",
                                status=502) from None


async def _chunks(raw: AsyncIterator[bytes]) -> AsyncIterator[ChatChunk]:
    """ChatChunks from the SSE bytes of a streamed completion, ending with reason and usage."""
    finish_reason: str | None = None
    usage: Usage | None = None
    buffer = b""
    done = False
    async for piece in raw:
        buffer += piece
        lines = buffer.split(b"\n")
        buffer = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # comments, `event:` and `id:` lines, blank separators
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            event = _parse_json(payload)
            if not isinstance(event, dict):
                raise MalformedUpstream("openai upstream sent an event that is not an object",
                                        status=502)
            if (error := event.get("error")) is not None:
                raise _StatusError(_error_status(error), httpx.Headers(),
                                   str(error.get("message") if isinstance(error, dict)
                                       else error))
            if (raw_usage := event.get("usage")) is not None:
                usage = Usage(prompt_tokens=raw_usage.get("prompt_tokens") or 0,
                              completion_tokens=raw_usage.get("completion_tokens") or 0)
            choices = event.get("choices")
            if not choices:
                continue
            choice = choices[0]
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            calls = [_tool_delta(call) for call in delta.get("tool_calls") or ()]
            # DeepSeek and vLLM stream a thinking model's reasoning as `reasoning_content`
            # (some servers as `reasoning`).
            reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            if text or calls or reasoning:
                yield ChatChunk(text=text, tool_calls=calls,
                                reasoning=reasoning if isinstance(reasoning, str) else "")
            # Held back: the final chunk must carry the reason and the usage that only
            # arrives in the chunk after it.
            finish_reason = choice.get("finish_reason") or finish_reason
        if done:
            break
    if not done and finish_reason is None:
        raise MalformedUpstream("openai upstream stream ended before the completion did",
                                status=502)
    yield ChatChunk(finish_reason=finish_reason or "stop", usage=usage)


def _error_status(error: Any) -> int:
    """An in-stream error's status, where the server gives one (vLLM does); else a 5xx."""
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def _tool_delta(call: dict[str, Any]) -> ToolCallDelta:
    function = call.get("function") or {}
    return ToolCallDelta(index=call.get("index") or 0, id=call.get("id"),
                         name=function.get("name"), arguments=function.get("arguments") or "")


def _whole_completion(body: Any) -> list[ChatChunk]:
    """A non-streamed `chat.completion` as the chunks a stream of it would have given."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise MalformedUpstream("openai upstream answered JSON that is not a chat completion",
                                status=502)
    message = choices[0].get("message") or {}
    calls = [ToolCallDelta(index=i, id=call.get("id"),
                           name=(call.get("function") or {}).get("name"),
                           arguments=(call.get("function") or {}).get("arguments") or "")
             for i, call in enumerate(message.get("tool_calls") or ())]
    raw_usage = body.get("usage") or {}
    usage = Usage(prompt_tokens=raw_usage.get("prompt_tokens") or 0,
                  completion_tokens=raw_usage.get("completion_tokens") or 0) if raw_usage else None
    chunks = []
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if message.get("content") or calls or reasoning:
        chunks.append(ChatChunk(text=message.get("content") or "", tool_calls=calls,
                                reasoning=reasoning if isinstance(reasoning, str) else ""))
    chunks.append(ChatChunk(finish_reason=choices[0].get("finish_reason") or "stop", usage=usage))
    return chunks


class OpenAIEmbedder:
    """An Embedder on the OpenAI embeddings API (or any compatible server)."""

    def __init__(
        self,
        model: str,
        dimension: int,
        api_key: str | None,
        base_url: str | None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_base_s: float = 0.5,
    ) -> None:
        self.model = model
        self.dimension = dimension
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed", base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._classify = partial(classify, sdk=openai, provider="openai", api_key=api_key)

    def close(self) -> None:
        """Release the pooled connections."""
        self._client.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for `texts`, in order; a dimension mismatch is a misconfigured model."""
        if not texts:
            return []
        extra: dict[str, Any] = {}
        # Only the text-embedding-3 family can shorten vectors; other servers reject the field.
        if self.model.startswith("text-embedding-3"):
            extra["dimensions"] = self.dimension
        response = call_with_retries(
            lambda: self._client.embeddings.create(model=self.model, input=list(texts), **extra),
            self._classify,
            max_retries=self._max_retries,
            backoff_base_s=self._backoff_base_s,
        )
        vectors = [list(item.embedding) for item in sorted(response.data, key=lambda d: d.index)]
        if any(len(vector) != self.dimension for vector in vectors):
            raise UpstreamError(
                f"embedding model {self.model} returned vectors of the wrong dimension "
                f"(expected {self.dimension})",
                status=502,
            )
        return vectors
