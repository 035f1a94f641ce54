"""In-batch contrastive loss (InfoNCE with in-batch negatives), the objective the retrieval methods fine-tune with
(sentence-transformers' MultipleNegativesRankingLoss: scale 20 on cosine similarities)."""

import torch
import torch.nn.functional as F


def in_batch_contrastive(scores: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each query against the documents of the batch, its own positive on the diagonal.

    Args:
        scores: [B, B'] query-document scores (B' >= B: extra columns are hard negatives); scaled already.
    """
    return F.cross_entropy(scores, torch.arange(scores.shape[0], device=scores.device))


def cosine_scores(queries: torch.Tensor, documents: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """scale * cos(q_i, d_j). queries [B, D], documents [B', D] -> [B, B']."""
    return scale * F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T
