"""Adaptive (shortlist + rerank) and funnel retrieval against brute force."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.dense.mrl.retrieval import adaptive_retrieve, funnel_cost, funnel_retrieve, prefix_scores


def cosine(a, b):
    return float(a @ b) / float(a.norm() * b.norm())


def brute_force_adaptive(q, d, shortlist_dim, k, full_dim):
    """Per query: cosine at shortlist_dim over all docs, keep the top k by a Python sort, rescore at full_dim."""
    out = torch.full((q.shape[0], d.shape[0]), float("-inf"), dtype=q.dtype)
    for i in range(q.shape[0]):
        low = [(cosine(q[i, :shortlist_dim], d[j, :shortlist_dim]), j) for j in range(d.shape[0])]
        for _, j in sorted(low, reverse=True)[:k]:
            out[i, j] = cosine(q[i, :full_dim], d[j, :full_dim])
    return out


@pytest.fixture
def embeddings():
    torch.manual_seed(0)
    return torch.randn(7, 32, dtype=torch.float64), torch.randn(40, 32, dtype=torch.float64)


@pytest.mark.parametrize("shortlist_dim, k, full_dim", [(4, 10, 32), (8, 1, 16), (2, 40, 32), (32, 5, 32)])
def test_adaptive_equals_brute_force(embeddings, shortlist_dim, k, full_dim):
    q, d = embeddings
    got = adaptive_retrieve(q, d, shortlist_dim, k, full_dim)
    expected = brute_force_adaptive(q, d, shortlist_dim, k, full_dim)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert (torch.isfinite(got).sum(1) == k).all()
    torch.testing.assert_close(got[torch.isfinite(got)], expected[torch.isfinite(expected)])


def test_a_shortlist_of_the_whole_corpus_is_full_dimension_retrieval(embeddings):
    q, d = embeddings
    got = adaptive_retrieve(q, d, shortlist_dim=4, shortlist_size=d.shape[0])
    full = prefix_scores(q, d, 32)
    torch.testing.assert_close(got, full)
    assert torch.equal(got.argsort(1, descending=True), full.argsort(1, descending=True))


def test_funnel_equals_chained_shortlists(embeddings):
    q, d = embeddings
    got = funnel_retrieve(q, d, [2, 8, 32], [20, 5])
    for i in range(q.shape[0]):
        first = prefix_scores(q[i : i + 1], d, 2)[0].topk(20).indices
        second = first[prefix_scores(q[i : i + 1], d[first], 8)[0].topk(5).indices]
        assert set(torch.isfinite(got[i]).nonzero().flatten().tolist()) == set(second.tolist())
        torch.testing.assert_close(got[i, second], prefix_scores(q[i : i + 1], d[second], 32)[0])


def test_cost_counts_dims_times_candidates():
    assert funnel_cost(1000, [384], []) == 384_000
    assert funnel_cost(1000, [24, 384], [100]) == 24 * 1000 + 384 * 100
    assert funnel_cost(1000, [16, 64, 384], [200, 50]) == 16_000 + 64 * 200 + 384 * 50


@pytest.mark.parametrize(
    "dims, sizes",
    [([8, 4], [5]), ([0, 32], [5]), ([8, 33], [5]), ([8, 32], [0]), ([8, 32], [41]), ([4, 8, 32], [5, 10]), ([8], [5])],
)
def test_bad_funnels_are_config_errors(embeddings, dims, sizes):
    q, d = embeddings
    with pytest.raises(ConfigError):
        funnel_retrieve(q, d, dims, sizes)
