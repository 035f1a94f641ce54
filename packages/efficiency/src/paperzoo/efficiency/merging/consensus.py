"""Consensus of K (sparsified) task vectors: TIES sign election and disjoint mean (arXiv:2306.01708, Sec. 3).

- Elect: gamma = sgn(sum_i w_i * delta_i) per entry (the paper's Eq. with w_i = 1; weights as in mergekit).
- Disjoint merge: the (weighted) mean over the models whose delta has the elected sign; zero where none does.
Deviation: where the sum is exactly zero the elected sign is 0 and the entry merges to zero (mergekit); the TIES
reference code instead assigns the sign of the whole vector's total there.
"""

import torch


def elect_sign(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """deltas (K, *shape), weights (K,) -> elected sign (*shape) in {-1, 0, 1}."""
    weighted = deltas * weights.reshape(-1, *([1] * (deltas.dim() - 1)))  # (K, *shape)
    return torch.sign(weighted.sum(dim=0))


def disjoint_mean(deltas: torch.Tensor, weights: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Mean of deltas (K, *shape) over models agreeing with `sign` (*shape), weighted by weights (K,) > 0."""
    w = weights.reshape(-1, *([1] * (deltas.dim() - 1)))  # (K, 1, ...)
    agree = (torch.sign(deltas) == sign.unsqueeze(0)) & (sign.unsqueeze(0) != 0)  # (K, *shape)
    total = (deltas * w * agree).sum(dim=0)  # (*shape)
    mass = (w * agree).sum(dim=0)  # (*shape)
    return torch.where(mass > 0, total / mass.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(total))


def ties_merge(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Elect, then disjoint mean: deltas (K, *shape) already trimmed -> merged delta (*shape)."""
    return disjoint_mean(deltas, weights, elect_sign(deltas, weights))
