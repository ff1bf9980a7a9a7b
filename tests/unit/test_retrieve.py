"""Reciprocal rank fusion and how hybrid search merges its two rankings."""

from __future__ import annotations

import pytest

from pipelines.retrieve import RRF_K, Hit, fuse, rrf


def hit(chunk_id: str, *, vector: float | None = None, keyword: float | None = None) -> Hit:
    return Hit(chunk_id=chunk_id, document_id="d", knowledge_id="k", title=None,
               content=chunk_id, page=None, score=vector or keyword or 0.0,
               vector_score=vector, keyword_score=keyword)


def test_rrf_adds_one_over_k_plus_rank_from_each_list() -> None:
    scores = rrf([["a", "b"], ["b", "c"]])
    assert scores["a"] == pytest.approx(1 / (RRF_K + 1))
    assert scores["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert scores["c"] == pytest.approx(1 / (RRF_K + 2))


def test_rrf_with_a_custom_k_and_empty_lists() -> None:
    assert rrf([[], ["x"]], k=0) == {"x": 1.0}
    assert rrf([]) == {}


def test_fuse_ranks_items_found_by_both_searches_first_and_keeps_both_scores() -> None:
    by_vector = [hit("a", vector=0.9), hit("b", vector=0.8)]
    by_keyword = [hit("b", keyword=0.5), hit("c", keyword=0.4)]
    fused = fuse(by_vector, by_keyword, limit=10)
    assert [h.chunk_id for h in fused] == ["b", "a", "c"]
    assert (fused[0].vector_score, fused[0].keyword_score) == (0.8, 0.5)
    assert fused[0].score == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))


def test_fuse_breaks_rank_ties_by_vector_similarity_and_honours_the_limit() -> None:
    # a: 1st + 2nd, b: 2nd + 1st -> equal RRF scores; the closer vector wins.
    by_vector = [hit("a", vector=0.7), hit("b", vector=0.6)]
    by_keyword = [hit("b", keyword=0.9), hit("a", keyword=0.8)]
    assert [h.chunk_id for h in fuse(by_vector, by_keyword, limit=1)] == ["a"]


def test_fuse_does_not_modify_its_inputs() -> None:
    by_vector = [hit("a", vector=0.9)]
    by_keyword = [hit("a", keyword=0.3)]
    fuse(by_vector, by_keyword, limit=5)
    assert by_vector[0].keyword_score is None and by_vector[0].score == 0.9
