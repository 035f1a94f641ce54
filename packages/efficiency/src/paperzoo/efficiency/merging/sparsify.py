"""Sparsifiers of task vectors: magnitude trimming (TIES) and random drop with rescale (DARE).

- Magnitude top-k, TIES "Trim" (arXiv:2306.01708, Sec. 3): keep the fraction `density` of entries with the largest
  |delta| and zero the rest. scope "global" is the paper's: one threshold per model over its whole task vector (the
  reference code flattens all parameters into one vector); scope "tensor" is mergekit's: one threshold per tensor.
  The global threshold is exact (equal to `torch.kthvalue` on the concatenated magnitudes) and computed in bounded
  memory: two streamed passes over one model's tensors, each tensor's magnitudes histogrammed by the bits of their
  float32 keys (`order_statistics`), never a concatenation of the task vector.
  k = round(density * n) entries are kept; entries tied with the k-th largest magnitude are kept too (the reference
  code's `>= kth value` rule), so ties can keep slightly more than k.
- Random drop, DARE (arXiv:2311.03099, Eq. 2): each entry is dropped with probability p (independent Bernoulli) and
  the survivors are rescaled by 1 / (1 - p), so the expectation equals the original delta. The generator is seeded
  from (seed, model index, tensor name), so results do not depend on the order tensors are visited in, nor on device
  (the mask is drawn on the CPU).
"""

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

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


_CHUNK = 1 << 20  # elements per histogram step: bounds the selection's temporaries to ~20 MiB whatever the tensor
_BINS = 1 << 16  # one histogram over 16 bits of the 32-bit key


def _keys(values: torch.Tensor) -> torch.Tensor:
    """float32 values (contiguous) -> int32 keys in the same order: a float's bits, with the magnitude bits of
    negative numbers flipped (IEEE 754 sign-magnitude -> two's complement order; -0.0 sorts just below +0.0)."""
    bits = values.view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)  # the arithmetic shift is -1 for negatives, 0 otherwise


def _value(key: int) -> float:
    """Inverse of `_keys` for one key (the flip is its own inverse)."""
    bits = key ^ 0x7FFFFFFF if key < 0 else key
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32).item())


def _chunks(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The entries of `tensor` as contiguous 1-D float32 chunks of at most _CHUNK (exact for fp16/bf16/fp32)."""
    flat = tensor.detach().reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        yield flat[start : start + _CHUNK].to(torch.float32).contiguous()


def _bincount(values: torch.Tensor) -> torch.Tensor:
    return torch.bincount(values.to(torch.int64), minlength=_BINS).cpu()  # (_BINS,) int64


def order_statistics(
    stream: Callable[[], Iterable[Sequence[torch.Tensor]]], ranks: Sequence[Callable[[int], Sequence[int]]]
) -> list[list[float]]:
    """Exact order statistics of S streams of floats, in two passes of bounded memory (no concatenation).

    `stream()` returns a fresh iterator; each step yields S tensors (one per stream, any shape and float dtype),
    e.g. one parameter tensor of each of S models. `ranks[s](n_s)` names the 0-based ascending ranks wanted from
    stream s once its length n_s is known (rank r is `torch.kthvalue(all_values, r + 1)` on the concatenation).
    Each value is mapped to a 32-bit key with the same order (`_keys`); pass 1 histograms the top 16 bits of the
    keys, which locates each rank's bucket; pass 2 histograms the low 16 bits inside the selected buckets only,
    which pins the exact key. Memory: two 65,536-bin histograms per stream and selected bucket, plus temporaries
    of one chunk; the stream itself holds one step's tensors at a time.

    Returns: per stream, the values at its ranks (float32 values as Python floats).
    """
    count = len(ranks)
    high = [torch.zeros(_BINS, dtype=torch.int64) for _ in range(count)]
    sizes = [0] * count
    for step in stream():  # pass 1: top 16 bits
        require(len(step) == count, f"The stream yielded {len(step)} tensors in a step; expected {count}.")
        for s, tensor in enumerate(step):
            for chunk in _chunks(tensor):
                high[s] += _bincount((_keys(chunk) >> 16) + _BINS // 2)
                sizes[s] += chunk.numel()
    wanted = [list(ranks[s](sizes[s])) for s in range(count)]
    # per stream and rank: its bucket and how many values lie in lower buckets
    located: list[list[tuple[int, int]]] = []
    for s in range(count):
        cumulative = torch.cumsum(high[s], 0)  # (_BINS,)
        places = []
        for r in wanted[s]:
            require(0 <= r < sizes[s], f"Rank {r} is out of range for {sizes[s]} values; expected 0 <= rank < n.")
            bucket = int(torch.searchsorted(cumulative, torch.tensor(r), right=True))  # first with cumulative > r
            places.append((bucket, int(cumulative[bucket - 1]) if bucket else 0))
        located.append(places)
    low = [{bucket: torch.zeros(_BINS, dtype=torch.int64) for bucket, _ in places} for places in located]
    if any(low):
        for step in stream():  # pass 2: low 16 bits inside the selected buckets
            for s, tensor in enumerate(step):
                if not low[s]:
                    continue
                for chunk in _chunks(tensor):
                    keys = _keys(chunk)
                    top = (keys >> 16) + _BINS // 2
                    for bucket, histogram in low[s].items():
                        histogram += _bincount(keys[top == bucket] & 0xFFFF)
    out = []
    for s in range(count):
        values = []
        for r, (bucket, below) in zip(wanted[s], located[s], strict=True):
            cumulative = torch.cumsum(low[s][bucket], 0)
            offset = int(torch.searchsorted(cumulative, torch.tensor(r - below), right=True))
            values.append(_value(((bucket - _BINS // 2) << 16) | offset))
        out.append(values)
    return out


def global_threshold(deltas: Callable[[], Iterable[torch.Tensor]] | Sequence[torch.Tensor], density: float) -> float:
    """One model's magnitude threshold over its whole task vector, exactly `magnitude_threshold` of the concatenation.

    `deltas()` returns a fresh iterator over the model's task-vector tensors (it is called twice: the selection
    streams the tensors twice, one at a time, so memory stays near one tensor instead of the whole task vector); a
    sequence of tensors is accepted too. +inf when round(density * n) is 0 (nothing kept).
    """
    if not callable(deltas):
        require(
            isinstance(deltas, Sequence),
            f"deltas={type(deltas).__name__} can be read only once; pass a function returning a fresh iterator.",
        )
    source = deltas if callable(deltas) else (lambda: iter(deltas))

    def steps() -> Iterator[tuple[torch.Tensor]]:
        for delta in source():
            yield (delta,)

    return global_thresholds(steps, [density])[0]


def _top_rank(n: int, density: float) -> list[int]:
    k = keep_count(density, n)
    return [n - k] if k else []  # the k-th largest is the (n - k)-th smallest, 0-based


def global_thresholds(
    deltas: Callable[[], Iterable[Sequence[torch.Tensor]]], densities: Sequence[float]
) -> list[float]:
    """`global_threshold` of K models at once: each step of `deltas()` yields one tensor's K deltas (e.g. (K, *shape)).

    Two streamed passes over all the models together (instead of two per model), holding one tensor of each model.
    """

    def magnitudes() -> Iterator[list[torch.Tensor]]:
        for step in deltas():
            yield [delta.detach().abs() for delta in step]

    values = order_statistics(magnitudes, [partial(_top_rank, density=density) for density in densities])
    return [v[0] if v else float("inf") for v in values]


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


def drop_mask(shape: Sequence[int], p: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's keep mask, bool (*shape) on the CPU (1 byte per entry), P(keep) = 1 - p; drawn for the whole tensor."""
    return torch.rand(tuple(shape), generator=generator) >= p


def apply_drop(delta: torch.Tensor, keep: torch.Tensor | None, p: float, *, rescale: bool = True) -> torch.Tensor:
    """delta with the entries outside `keep` (same shape; None when p == 0: keep all) zeroed, rescaled by 1/(1-p)."""
    if p == 0.0 or keep is None:
        return delta.clone()
    dropped = delta * keep.to(delta.device)
    return dropped / (1.0 - p) if rescale else dropped


def random_drop(delta: torch.Tensor, p: float, generator: torch.Generator, *, rescale: bool = True) -> torch.Tensor:
    """DARE: zero each entry with probability p; multiply survivors by 1/(1-p) when `rescale`. Same shape as delta."""
    require(0.0 <= p < 1.0, f"drop_rate={p} is out of range; expected 0 <= drop_rate < 1.")
    if p == 0.0:
        return delta.clone()
    return apply_drop(delta, drop_mask(delta.shape, p, generator), p, rescale=rescale)
