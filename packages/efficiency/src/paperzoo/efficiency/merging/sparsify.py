"""Sparsifiers of task vectors: magnitude trimming (TIES) and random drop with rescale (DARE).

- Magnitude top-k, TIES "Trim" (arXiv:2306.01708, Sec. 3): keep the fraction `density` of entries with the largest
  |delta| and zero the rest. scope "global" is the paper's: one threshold per model over its whole task vector (the
  reference code flattens all parameters into one vector); scope "tensor" is mergekit's: one threshold per tensor.
  The global threshold is computed from one model's magnitudes at a time, never all K task vectors together.
  k = round(density * n) entries are kept; entries tied with the k-th largest magnitude are kept too (the reference
  code's `>= kth value` rule), so ties can keep slightly more than k.
- Random drop, DARE (arXiv:2311.03099, Eq. 2): each entry is dropped with probability p (independent Bernoulli) and
  the survivors are rescaled by 1 / (1 - p), so the expectation equals the original delta. The generator is seeded
  from (seed, model index, tensor name), so results do not depend on the order tensors are visited in, nor on device
  (the mask is drawn on the CPU).
"""

import hashlib
from collections.abc import Callable, Iterable

import torch

from paperzoo.core.errors import require


def keep_count(density: float, n: int) -> int:
    """Number of entries of n that magnitude trimming at `density` keeps (before ties)."""
    return min(n, max(0, round(density * n)))


def magnitude_threshold(magnitudes: torch.Tensor, density: float) -> float:
    """The k-th largest value of the 1-D `magnitudes` (k = round(density * n)); +inf when k is 0."""
    n = magnitudes.numel()
    k = keep_count(density, n)
    if k == 0:
        return float("inf")
    return float(torch.kthvalue(magnitudes.reshape(-1).float().cpu(), n - k + 1).values)


def global_threshold(deltas: Callable[[], Iterable[torch.Tensor]] | Iterable[torch.Tensor], density: float) -> float:
    """One model's threshold over its whole task vector: `deltas` yields its tensors' deltas one at a time."""
    parts = [delta.detach().abs().reshape(-1).float().cpu() for delta in (deltas() if callable(deltas) else deltas)]
    if not parts:
        return float("inf")
    return magnitude_threshold(torch.cat(parts), density)  # (n,) for this model only


def magnitude_mask(delta: torch.Tensor, density: float, threshold: float | None = None) -> torch.Tensor:
    """Mask of the entries of `delta` kept by top-k magnitude: per tensor unless a global `threshold` is given."""
    magnitudes = delta.abs()
    if threshold is None:
        threshold = magnitude_threshold(magnitudes, density)
    return magnitudes >= threshold


def generator_for(seed: int, model_index: int, name: str) -> torch.Generator:
    """A CPU generator seeded from (seed, model index, tensor name) only."""
    digest = hashlib.sha256(f"{seed}\0{model_index}\0{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def random_drop(delta: torch.Tensor, p: float, generator: torch.Generator, *, rescale: bool = True) -> torch.Tensor:
    """DARE: zero each entry with probability p; multiply survivors by 1/(1-p) when `rescale`. Same shape as delta."""
    require(0.0 <= p < 1.0, f"drop_rate={p} is out of range; expected 0 <= drop_rate < 1.")
    if p == 0.0:
        return delta.clone()
    keep = torch.rand(delta.shape, generator=generator) >= p  # (*shape) on CPU, P(keep) = 1 - p
    dropped = delta * keep.to(delta.device)
    return dropped / (1.0 - p) if rescale else dropped
