"""PCB-Merging: "Parameter Competition Balancing for Model Merging" (Du et al., NeurIPS 2024), arXiv:2410.02396.

https://arxiv.org/abs/2410.02396 (the id the reference README links); reference code duguodong7/pcb-merging,
`pcb-merging.py` (the file its README names as the method). With K task vectors tau_i (the reference flattens each
model into one vector of d entries; here every statistic over "the whole task vector" is computed exactly, streamed
tensor by tensor, by `sparsify.order_statistics`):

1. Outlier clipping: |tau_i| is clamped to [lo_i, hi_i], its order statistics at sorted indices int(d * clip) and
   int(d * (1 - clip) - 1) (clip = 1e-4 in the reference); tau_hat_i = sign(tau_i) * clamp(|tau_i|, lo_i, hi_i) is
   what gets merged.
2. Intra-balancing (self-awareness): intra_i = exp(K * norm(clamp(|tau_i|))^2), norm the min-max normalization over
   the task's own d entries, i.e. (x - lo_i) / (hi_i - lo_i).
3. Inter-balancing (cross-awareness): inter_i = tanh(tau_i * sum_j tau_j) (unclipped tau, j over all K tasks).
4. beta_i = intra_i * inter_i; drop and rescale: beta_hat_i = (clamp(beta_i, b_i, max beta_i) - b_i) /
   (max beta_i - b_i) with b_i the sorted(beta_i)[int(d * (1 - ratio))]: the top `ratio` of beta_i keeps a weight
   in (0, 1], every other entry 0.
5. tau_m = sum_i w_i beta_hat_i tau_hat_i / max(sum_i beta_hat_i, 1e-12), theta = theta_0 + lambda_ * tau_m.

Deviations and choices:
- The paper writes both balancing terms with a softmax (intra: Softmax(K * Norm(tau_i * tau_i)); inter:
  sum_j Softmax(Norm(tau_i * tau_j))); this follows the reference code, as the brief asks: an unnormalized exp of
  the squared min-max-normalized magnitude, and tanh(tau_i * sum_j tau_j). A softmax's per-task normalizer would
  cancel anyway in step 4's per-task min-max normalization.
- w_i (`weights`, default 1) are the reference's per-task lambdas `lams` (searched there with CMA-ES/nevergrad, not
  here); the overall lambda_ multiplies them.
- Where the reference divides by zero (hi_i == lo_i: a task vector of constant magnitude; or max beta_i == b_i),
  it yields NaN; here the normalized value is 0 (intra = exp(0) = 1; beta_hat_i = 0: the task keeps nothing).
- Defaults: ratio 0.1 (`PCB_merge`'s default; the paper's runs use 0.05-0.2), clip 1e-4, lambda_ 1.0 (the paper
  tunes lambda on validation data, e.g. 0.8-2.2 for T5).
- Memory: two exact order-statistic selections (|tau_i| bounds, then beta_i cut-offs), each two streamed passes
  holding the K deltas of one tensor at a time, then the merge pass: 5 passes over the inputs instead of one
  (K x d) matrix in memory.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from paperzoo.efficiency.merging.consensus import sum_models
from paperzoo.efficiency.merging.sparsify import order_statistics

__all__ = ["PCBStatistics", "balancing", "clip_ranks", "cut_ranks", "pcb_combine", "pcb_statistics", "rescale"]


@dataclass(frozen=True)
class PCBStatistics:
    """Per task, over its whole task vector: the clipping bounds of |tau_i| and the cut-off and maximum of beta_i."""

    lo: torch.Tensor  # (K,) float32
    hi: torch.Tensor  # (K,)
    cut: torch.Tensor  # (K,) b_i = sorted(beta_i)[int(d * (1 - ratio_i))]
    top: torch.Tensor  # (K,) max beta_i


def clip_ranks(d: int, clip: float) -> list[int]:
    """The reference's sorted indices of |tau| clamped to: int(d * clip) and int(d * (1 - clip) - 1)."""
    return [int(d * clip), max(0, int(d * (1 - clip) - 1))] if d else []


def cut_ranks(d: int, ratio: float) -> list[int]:
    """The sorted indices of beta: the cut-off int(d * (1 - ratio)) (kept entries lie above it) and the maximum."""
    return [int(d * (1 - ratio)), d - 1] if d else []


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) broadcasting against `like` (K, *shape), on its device."""
    return values.to(like.device).reshape(-1, *([1] * (like.dim() - 1)))


def _normalize(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Min-max normalization with known bounds; 0 where high == low (the reference divides by zero there)."""
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(x))


def balancing(deltas: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """beta (intra * inter) and the clipped task vectors tau_hat, both (K, *shape), of deltas (K, *shape) float32.

    lo, hi (K,): each task's clipping bounds of |tau| over its whole task vector.
    """
    count = deltas.shape[0]
    low, high = _column(lo, deltas), _column(hi, deltas)
    clipped = torch.minimum(torch.maximum(deltas.abs(), low), high)  # (K, *shape) clamp(|tau|, lo, hi)
    intra = torch.exp(count * _normalize(clipped, low, high) ** 2)  # self-awareness, in [1, e^K]
    inter = torch.tanh(deltas * sum_models(deltas).unsqueeze(0))  # cross-awareness, agreement with the sum
    return intra * inter, torch.sign(deltas) * clipped


def rescale(beta: torch.Tensor, cut: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """beta_hat (K, *shape): beta min-max normalized above each task's cut-off, 0 at or below it."""
    low, high = _column(cut, beta), _column(top, beta)
    return _normalize(torch.minimum(torch.maximum(beta, low), high), low, high)


def pcb_statistics(sources: Any) -> PCBStatistics | None:
    """The global statistics, streamed: `sources` is the procedure's `Sources` (its all_deltas, params, model_params).

    None when there is nothing to merge (every tensor excluded or not floating point).
    """
    clip = float(sources.params["clip"])
    ratios = [float(params["ratio"]) for params in sources.model_params]
    stream = sources.all_deltas()
    count = len(ratios)

    def magnitudes() -> Iterator[torch.Tensor]:
        for _, deltas in stream():
            yield deltas.abs()  # (K, *shape): one tensor per task

    bounds = order_statistics(magnitudes, [partial(clip_ranks, clip=clip)] * count)
    if not bounds[0]:
        return None
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float32)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float32)

    def scores() -> Iterator[torch.Tensor]:
        for _, deltas in stream():
            yield balancing(deltas, lo, hi)[0]

    cuts = order_statistics(scores, [partial(cut_ranks, ratio=ratio) for ratio in ratios])
    return PCBStatistics(
        lo=lo,
        hi=hi,
        cut=torch.tensor([c[0] for c in cuts], dtype=torch.float32),
        top=torch.tensor([c[1] for c in cuts], dtype=torch.float32),
    )


def pcb_combine(
    base: torch.Tensor, deltas: torch.Tensor, weights: Sequence[float] | torch.Tensor, lambda_: float, stats: Any
) -> torch.Tensor:
    """theta = base + lambda_ * sum_i w_i beta_hat_i tau_hat_i / sum_i beta_hat_i for one tensor, float32.

    deltas (K, *shape) float32; weights (K,); stats the `PCBStatistics` of the whole task vectors.
    """
    beta, clipped = balancing(deltas, stats.lo, stats.hi)
    scale = rescale(beta, stats.cut, stats.top)  # (K, *shape) in [0, 1]
    w = _column(torch.as_tensor(weights, dtype=torch.float32), deltas)
    merged = sum_models(clipped * w * scale) / torch.clamp(sum_models(scale), min=1e-12)
    return base.float() + lambda_ * merged
