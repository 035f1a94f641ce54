"""MUVERA's FDE-retrieve-then-Chamfer-rerank pipeline against brute-force Chamfer search."""

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.index.multivector import MultiVectorStore
from paperzoo.retrieval.late.muvera.fde import FDEConfig, encode_documents, encode_queries
from paperzoo.retrieval.late.muvera.pipeline import (
    MuveraRetriever,
    chamfer_rerank,
    chamfer_search,
    recall_of_true_top,
)
from paperzoo.retrieval.late.scoring import maxsim

CONFIG = FDEConfig(k_sim=3, d_proj=8, repetitions=4, seed=0)


def random_sets(count: int, max_length: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    vectors = F.normalize(torch.randn(count, max_length, dim, generator=generator), dim=-1)
    lengths = torch.randint(1, max_length + 1, (count,), generator=generator)
    mask = torch.arange(max_length)[None, :] < lengths[:, None]
    return vectors * mask[..., None], mask


@pytest.fixture(scope="module")
def corpus() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    docs, doc_mask = random_sets(60, 12, 16, seed=0)
    queries, query_mask = random_sets(7, 5, 16, seed=1)
    return docs, doc_mask, queries, query_mask


def test_chamfer_search_is_the_top_of_all_maxsim_scores(corpus):
    docs, doc_mask, queries, query_mask = corpus
    scores, ids = chamfer_search(queries, query_mask, docs, doc_mask, k=5)
    everything = maxsim(queries, query_mask, docs, doc_mask)
    for q in range(queries.shape[0]):
        order = sorted(range(docs.shape[0]), key=lambda n: -float(everything[q, n]))[:5]
        assert ids[q].tolist() == order
        torch.testing.assert_close(scores[q], everything[q, order])


def test_rerank_scores_each_candidate_exactly_and_skips_missing(corpus):
    docs, doc_mask, queries, query_mask = corpus
    store = MultiVectorStore.from_padded(docs, doc_mask, "fp32")
    candidates = torch.tensor([[3, 10, -1, 42], [0, 1, 2, 59]] + [[5, 6, 7, 8]] * 5)
    scores, ids = chamfer_rerank(queries, query_mask, store, candidates, k=3)
    everything = maxsim(queries, query_mask, docs, doc_mask)
    for q in range(queries.shape[0]):
        real = [c for c in candidates[q].tolist() if c >= 0]
        expected = sorted(real, key=lambda n: -float(everything[q, n]))[:3]
        assert ids[q].tolist() == expected
        torch.testing.assert_close(scores[q], everything[q, expected])


def test_all_documents_as_candidates_equals_brute_force(corpus):
    docs, doc_mask, queries, query_mask = corpus
    retriever = MuveraRetriever.build(docs, doc_mask, CONFIG)
    scores, ids = retriever.search(queries, query_mask, k=10, candidates=len(retriever))
    true_scores, true_ids = chamfer_search(queries, query_mask, docs, doc_mask, k=10)
    assert torch.equal(ids, true_ids)
    torch.testing.assert_close(scores, true_scores)


def test_candidates_are_the_top_fde_inner_products(corpus):
    docs, doc_mask, queries, query_mask = corpus
    retriever = MuveraRetriever.build(docs, doc_mask, CONFIG)
    fde_scores, ids = retriever.candidates(queries, query_mask, 15)
    expected = encode_queries(queries, query_mask, CONFIG) @ encode_documents(docs, doc_mask, CONFIG).T
    top = expected.topk(15, dim=1)
    torch.testing.assert_close(fde_scores, top.values, atol=1e-4, rtol=1e-5)
    assert torch.equal(ids, top.indices)


def test_search_results_are_reranked_candidates(corpus):
    docs, doc_mask, queries, query_mask = corpus
    retriever = MuveraRetriever.build(docs, doc_mask, CONFIG, index_kind="hnsw")
    scores, ids = retriever.search(queries, query_mask, k=4, candidates=12)
    _, candidate_ids = retriever.candidates(queries, query_mask, 12)
    everything = maxsim(queries, query_mask, docs, doc_mask)
    for q in range(queries.shape[0]):
        assert set(ids[q].tolist()) <= set(candidate_ids[q].tolist())
        assert (scores[q][:-1] >= scores[q][1:]).all()
        torch.testing.assert_close(scores[q], everything[q, ids[q]])


def test_fde_candidates_beat_chance_on_clustered_sets():
    # documents near one of 8 topics, queries = noisy copies of part of a document: FDEs must find the source
    generator = torch.Generator().manual_seed(0)
    topics = F.normalize(torch.randn(8, 32, generator=generator), dim=-1)
    docs = F.normalize(
        topics[torch.randint(0, 8, (200, 1), generator=generator)].expand(200, 16, 32)
        + 0.6 * torch.randn(200, 16, 32, generator=generator),
        dim=-1,
    )
    queries = F.normalize(docs[:40, :6] + 0.1 * torch.randn(40, 6, 32, generator=generator), dim=-1)
    retriever = MuveraRetriever.build(docs, None, FDEConfig(k_sim=3, d_proj=None, repetitions=8))
    _, ids = retriever.candidates(queries, None, 10)  # 5% of the corpus
    assert recall_of_true_top(ids, torch.arange(40)[:, None]) >= 0.9


def test_recall_of_true_top():
    found = torch.tensor([[1, 2, 3], [4, 5, 6]])
    true = torch.tensor([[3, 9], [7, 8]])
    assert recall_of_true_top(found, true) == pytest.approx(0.25)


def test_bad_inputs_are_config_errors(corpus):
    docs, doc_mask, queries, query_mask = corpus
    retriever = MuveraRetriever.build(docs, doc_mask, CONFIG)
    with pytest.raises(ConfigError, match="candidates"):
        retriever.search(queries, query_mask, k=10, candidates=5)
    with pytest.raises(ConfigError, match="query_vectors"):
        retriever.search(torch.zeros(2, 3, 7), None)
    with pytest.raises(ConfigError, match="doc_vectors"):
        MuveraRetriever.build(torch.zeros(4, 16), None, CONFIG)


def test_cached_token_sets_compute_once_and_return_the_same(monkeypatch, tmp_path):
    from paperzoo.retrieval.late.muvera import pipeline

    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    calls = []

    def fake_token_sets(texts, max_length):
        calls.append(list(texts))
        vectors = torch.full((len(texts), 3, 4), 1 / 3)  # not exact in fp16
        return vectors, torch.ones(len(texts), 3, dtype=torch.bool)

    monkeypatch.setattr(pipeline, "token_sets", fake_token_sets)
    first = pipeline.cached_token_sets(["a", "b"], 16)
    second = pipeline.cached_token_sets(["a", "b"], 16)
    assert len(calls) == 1 and torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    pipeline.cached_token_sets(["a", "b"], 8)  # another key
    pipeline.cached_token_sets(["a", "c"], 16)
    assert len(calls) == 3
