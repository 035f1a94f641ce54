"""Consensus of K (sparsified) task vectors: TIES sign election and disjoint mean (arXiv:2306.01708, Sec. 3).

- Elect: gamma = sgn(sum_i w_i * delta_i) per entry (the paper's Eq. with w_i = 1; weights as in mergekit).
- Disjoint merge: the (weighted) mean over the models whose delta has the elected sign; zero where none does.
Deviation: where the sum is exactly zero the elected sign is 0 and the entry merges to zero (mergekit); the TIES
reference code instead assigns the sign of the whole vector's total there.
"""

import torch


def sum_models(x: torch.Tensor) -> torch.Tensor:
    """x (K, *shape) -> (*shape): x[0] + x[1] + ... in that order, so a chunk's sum equals the whole tensor's bits
    (torch's dim-0 sum reorders the K terms for narrow tensors, which would make chunked merges differ)."""
    total = x[0].clone()
    for row in x[1:]:
        total += row
    return total


def elect_sign(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """deltas (K, *shape), weights (K,) -> elected sign (*shape) in {-1, 0, 1}."""
    weighted = deltas * weights.reshape(-1, *([1] * (deltas.dim() - 1)))  # (K, *shape)
    return torch.sign(sum_models(weighted))


def disjoint_mean(deltas: torch.Tensor, weights: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Mean of deltas (K, *shape) over models agreeing with `sign` (*shape), weighted by weights (K,) > 0."""
    w = weights.reshape(-1, *([1] * (deltas.dim() - 1)))  # (K, 1, ...)
    agree = (torch.sign(deltas) == sign.unsqueeze(0)) & (sign.unsqueeze(0) != 0)  # (K, *shape)
    total = sum_models(deltas * w * agree)  # (*shape)
    mass = sum_models((w * agree).expand_as(deltas))  # (*shape)
    return torch.where(mass > 0, total / mass.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(total))


def ties_merge(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Elect, then disjoint mean: deltas (K, *shape) already trimmed -> merged delta (*shape)."""
    return disjoint_mean(deltas, weights, elect_sign(deltas, weights))
