"""Ranking metrics (nDCG@10, Recall@k, MRR@10) from torchmetrics' retrieval functionals, over a dense score matrix.

A retrieval run is a score matrix [Q, N] over the whole corpus; documents a stage did not retrieve (outside a
shortlist) score -inf, so they rank last, exactly as if the run had returned only its candidates.
"""

import torch
from torchmetrics.functional.retrieval import retrieval_normalized_dcg, retrieval_recall, retrieval_reciprocal_rank

from paperzoo.core.errors import require


def retrieval_metrics(
    scores: torch.Tensor, relevance: torch.Tensor, recall_at: tuple[int, ...] = (10, 100)
) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@k over queries.

    Args:
        scores: [Q, N] higher is better; -inf for documents not retrieved.
        relevance: [Q, N] graded relevance (0 = not relevant); every query needs at least one relevant document.

    Returns:
        {"ndcg@10", "mrr@10", "recall@k" for k in recall_at}.
    """
    require(
        scores.shape == relevance.shape, f"scores {tuple(scores.shape)} and relevance {tuple(relevance.shape)} differ"
    )
    require(bool((relevance > 0).any(1).all()), "every query needs at least one relevant document")
    # torchmetrics ranks by score; -inf would break its sort ties, so send unretrieved documents far below
    finite = torch.where(torch.isfinite(scores), scores.double(), torch.tensor(-1e30, dtype=torch.double))
    totals = {"ndcg@10": 0.0, "mrr@10": 0.0, **{f"recall@{k}": 0.0 for k in recall_at}}
    for q in range(scores.shape[0]):
        preds, target = finite[q], relevance[q]
        totals["ndcg@10"] += float(retrieval_normalized_dcg(preds, target, top_k=10))
        totals["mrr@10"] += float(retrieval_reciprocal_rank(preds, target > 0, top_k=10))
        for k in recall_at:
            totals[f"recall@{k}"] += float(retrieval_recall(preds, target > 0, top_k=k))
    return {name: total / scores.shape[0] for name, total in totals.items()}
