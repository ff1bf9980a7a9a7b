"""`POST /v1/embeddings` in OpenAI's format, served by this server's embedder.

The OpenAI SDK asks for `encoding_format: "base64"` by default (little-endian float32) and
decodes it itself, so both encodings are served. Errors on this path use OpenAI's shape
(api/errors.wire_format).
"""

from __future__ import annotations

import base64
import struct

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import parse
from api.context import services
from api.openapi import doc
from pipelines.errors import InvalidInput
from pipelines.tokens import count_tokens
from schemas.knowledge import EmbeddingRequest

_MAX_TOTAL_CHARS = 4_000_000


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@doc("OpenAI Embeddings: vectors for a string or a list of strings", body=EmbeddingRequest,
     tags=["inference"])
async def create_embeddings(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, EmbeddingRequest, svc.settings.max_json_body_bytes)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if sum(len(t) for t in texts) > _MAX_TOTAL_CHARS:
        raise InvalidInput(f"input is longer than {_MAX_TOTAL_CHARS} characters in total.")
    embedder = svc.embedders.by_model(body.model)
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise InvalidInput(f"{embedder.model} makes {embedder.dimension}-dimensional vectors; "
                           f"dimensions={body.dimensions} is not supported.")
    vectors = await anyio.to_thread.run_sync(embedder.embed, texts)
    tokens = sum(count_tokens(text) for text in texts)
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i,
                  "embedding": _encode(vector, body.encoding_format)}
                 for i, vector in enumerate(vectors)],
        "model": embedder.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(payload), media_type="application/json")


routes = [Route("/v1/embeddings", create_embeddings, methods=["POST"])]
