"""The pieces of MUVERA's claim check (recall curves, the SV heuristic, interpolation), the card, and the quick
check itself (slow tier)."""

import math

import pytest
import torch

from paperzoo.retrieval.late.muvera.check import (
    QUICK,
    candidate_grid,
    candidates_for,
    fde_quality,
    ranked_recall_curve,
    synthetic_corpus,
    token_level_curve,
)
from paperzoo.retrieval.late.muvera.fde import FDEConfig
from paperzoo.retrieval.late.scoring import maxsim


def test_candidates_for_interpolates_log_linearly():
    curve = [(10.0, 0.5), (40.0, 0.8), (160.0, 1.0)]
    assert candidates_for(curve, 0.5) == 10.0
    assert candidates_for(curve, 0.9) == pytest.approx(math.exp((math.log(40) + math.log(160)) / 2))
    assert candidates_for(curve, 0.3) == 10.0
    assert candidates_for([(10.0, 0.5), (20.0, 0.6)], 0.9) == math.inf


def test_candidate_grid_ends_at_the_corpus():
    grid = candidate_grid(300)
    assert grid[0] == 10 and grid[-1] == 300 and grid == sorted(set(grid))
    assert all(b / a <= 1.25 for a, b in zip(grid, grid[1:-1], strict=False))


def test_synthetic_corpus_shapes_and_unit_vectors():
    from dataclasses import replace

    setting = replace(QUICK, documents=20, queries=5)
    docs, doc_mask, queries, query_mask = synthetic_corpus(setting)
    assert docs.shape == (20, 64, 64) and queries.shape == (5, 16, 64)
    lengths = doc_mask.sum(1)
    assert lengths.min() >= 32 and lengths.max() <= 64
    torch.testing.assert_close(docs[doc_mask].norm(dim=-1), torch.ones(int(lengths.sum())))
    assert docs[~doc_mask].abs().sum() == 0
    again = synthetic_corpus(setting)
    assert torch.equal(again[0], docs) and torch.equal(again[2], queries)


def test_token_level_curve_against_a_naive_union():
    generator = torch.Generator().manual_seed(0)
    docs = torch.randn(12, 5, 8, generator=generator)
    doc_mask = torch.rand(12, 5, generator=generator) > 0.3
    queries = torch.randn(3, 4, 8, generator=generator)
    query_mask = torch.ones(3, 4, dtype=torch.bool)
    query_mask[1, 3] = False
    true_ids = maxsim(queries, query_mask, docs, doc_mask).topk(3, dim=1).indices
    unique_curve, raw_curve = token_level_curve(queries, query_mask, docs, doc_mask, true_ids, [1, 3])
    for (unique, recall), (raw, _), k_prime in zip(unique_curve, raw_curve, [1, 3], strict=True):
        sizes, hits, retrieved = [], [], []
        for q in range(3):
            found = set()
            for i in range(4):
                if not query_mask[q, i]:
                    continue
                pairs = [(float(queries[q, i] @ docs[n, j]), n) for n in range(12) for j in range(5) if doc_mask[n, j]]
                found |= {n for _, n in sorted(pairs, reverse=True)[:k_prime]}
            sizes.append(len(found))
            retrieved.append(int(query_mask[q].sum()) * k_prime)
            hits.append(sum(int(t) in found for t in true_ids[q]) / 3)
        assert unique == pytest.approx(sum(sizes) / 3)
        assert raw == pytest.approx(sum(retrieved) / 3)
        assert recall == pytest.approx(sum(hits) / 3)


def test_ranked_recall_curve():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.0, 1.0, 0.2, 0.3]])
    true_ids = torch.tensor([[2, 3], [0, 1]])
    assert ranked_recall_curve(scores, true_ids, [1, 2, 4]) == [(1.0, 0.25), (2.0, 0.5), (4.0, 1.0)]


def test_fde_quality_of_an_exact_encoding_is_perfect():
    # one partition, no projection: <sum q, mean p> equals Chamfer when every document is a single vector
    generator = torch.Generator().manual_seed(0)
    docs, queries = torch.randn(6, 1, 4, generator=generator), torch.randn(3, 2, 4, generator=generator)
    quality = fde_quality(
        queries, torch.ones(3, 2, dtype=torch.bool), docs, torch.ones(6, 1, dtype=torch.bool), FDEConfig(0, None, 1)
    )
    assert quality["normalised error"] < 1e-6 and quality["pearson"] == pytest.approx(1.0, abs=1e-5)


def test_card_is_complete():
    from paperzoo.core.card import load_object
    from paperzoo.retrieval.late.muvera.card import CARD

    assert CARD.key == "muvera" and CARD.number == 82 and CARD.kind == "inference"
    for path in (*CARD.entry_points, CARD.check, CARD.run):
        load_object(path)
    assert {"wikipedia", "tiny"} <= set(CARD.configs())


@pytest.mark.slow
def test_quick_check_runs_and_is_complete():
    from paperzoo.core.checks import ClaimResult, run_check
    from paperzoo.retrieval.late.muvera.check import check

    result = run_check(check, quick=True)
    assert ClaimResult.from_json(result.to_json()).criteria == result.criteria
    assert all(math.isfinite(c.measured) for c in result.criteria)
    assert "synthetic: FDE" in result.curves and result.plot["xscale"] == "log"
