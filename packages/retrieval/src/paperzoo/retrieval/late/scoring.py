"""Late-interaction similarity shared by ColBERTer and MUVERA.

MaxSim (ColBERT): s(q, d) = sum_i max_j <q_i, d_j>; MUVERA calls the same quantity Chamfer similarity.
"""

import torch


def maxsim(
    queries: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor, doc_mask: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """All-pairs MaxSim between padded sets of vectors.

    Args:
        queries: [Q, Lq, D], query_mask: [Q, Lq] (1 = real vector).
        docs: [N, Ld, D], doc_mask: [N, Ld].

    Returns:
        [Q, N] sum over real query vectors of the max inner product with the real document vectors (a document
        with no real vector scores 0 for every query vector).
    """
    scores = []
    for start in range(0, docs.shape[0], chunk):
        block, block_mask = docs[start : start + chunk], doc_mask[start : start + chunk]
        sims = torch.einsum("qid,njd->qnij", queries, block)  # [Q, n, Lq, Ld]
        sims = sims.masked_fill(~block_mask.bool()[None, :, None, :], float("-inf"))
        best = sims.amax(-1).nan_to_num(0.0, neginf=0.0)  # [Q, n, Lq]
        scores.append((best * query_mask[:, None, :].to(best.dtype)).sum(-1))
    return torch.cat(scores, dim=1)
