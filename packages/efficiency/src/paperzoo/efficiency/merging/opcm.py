"""OPCM: Merging Models on the Fly Without Retraining: A Sequential Approach to Scalable Continual Model Merging
(Tang et al., 2025), https://arxiv.org/abs/2501.09522.

What is implemented (`OPCM`), following the authors' `fusion_bench/method/opcm/opcm.py` for the details:
- Models arrive one at a time; the state is the merged task vector tau_m (one model's worth of float32), the
  previous scale lambda_{t-1}, the number of models seen and the sum of their task-vector norms: O(1) memory in the
  number of models.
- The first model is taken as is (tau_m = tau_1, lambda_1 = 1).
- For each new model t and each Linear weight: the SVD of the previous merged task vector tau_m = U S V^T, the
  split rank r = the first index where the cumulative sum of singular values over their total exceeds
  `alpha` (the reference's `argmax(cumsum(s) / sum(s) > alpha)`), the new task vector expressed in that basis
  P = U^T tau_t V, its whole diagonal and its top r x r block zeroed, tau_t^perp = U P V^T. Every other tensor
  (biases, conv kernels, norms) takes tau_t unprojected.
- theta_t = theta_0 + (lambda_{t-1} tau_m + tau_t^perp) / lambda_t, where lambda_t is such that the merged task
  vector's norm (over all merged tensors at once) equals the running mean of the individual task vectors' norms.

Continual baselines with the same interface (`add(model)`, `merged()`), as in fusion_bench's `method/opcm/`:
- `ContinualTaskArithmetic`: theta_t = theta_{t-1} + lambda * tau_t.
- `ContinualAverage`: the running mean of the models, theta_t = ((t - 1) theta_{t-1} + theta_t^ft) / t.
- `ContinualTIES`: theta_1 = theta_0 + lambda tau_1, then theta_t = theta_{t-1} + lambda * TIES(tau_m, tau_t),
  where TIES trims each of the two vectors to its top-`density` magnitudes (one global threshold per vector),
  elects the sign of their sum and takes the disjoint **sum** (fusion_bench's `merge_func: sum`).

Deviations: Linear weights are recognized by name (`linear`, default: every 2-D floating tensor whose name ends in
"weight"; `linear_weight_names(module)` lists a module's exact nn.Linear weights); where a Linear weight's merged
task vector is exactly zero there is no subspace to protect and tau_t passes unprojected (the reference would zero
the diagonal in an arbitrary basis). TIES's sign election gives 0 where the sum is exactly zero (the engine's
`elect_sign`; the TIES reference uses the sign of the vector's total there). Tensors matched by `exclude` (fnmatch)
and non-floating tensors stay the base's.
"""

import fnmatch
import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from paperzoo.core.errors import require
from paperzoo.efficiency.merging.consensus import elect_sign
from paperzoo.efficiency.merging.sparsify import global_threshold, magnitude_mask
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible, task_vector

__all__ = [
    "OPCM",
    "ContinualAverage",
    "ContinualMerger",
    "ContinualTIES",
    "ContinualTaskArithmetic",
    "linear_weight_names",
    "orthogonal_projection",
    "sequential_merge",
    "split_rank",
]


def linear_weight_names(module: nn.Module, prefix: str = "") -> list[str]:
    """State-dict names of the weights of every nn.Linear in `module` (each prefixed by `prefix`)."""
    return [
        f"{prefix}{name}.weight" if name else f"{prefix}weight"
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear)
    ]


def split_rank(singular_values: Tensor, alpha: float) -> int:
    """The reference's split rank: the first index i with sum(s[:i + 1]) / sum(s) > alpha (0 if none)."""
    energy = singular_values.cumsum(0) / singular_values.sum()  # [k], non-decreasing to 1
    return int((energy > alpha).float().argmax())


def orthogonal_projection(merged: Tensor, new: Tensor, alpha: float) -> Tensor:
    """tau^perp: `new` [m, n] with its diagonal and top r x r block zeroed in the SVD basis of `merged` [m, n].

    Args:
        merged: the previous merged task vector of this Linear weight (its SVD defines the basis).
        new: the new model's task vector of the same weight.
        alpha: the cumulative-energy fraction defining the split rank r (`split_rank`).
    """
    return _projection(merged, new, alpha)[0]


def _projection(merged: Tensor, new: Tensor, alpha: float) -> tuple[Tensor, int]:
    """`orthogonal_projection` and the split rank it used."""
    require(
        merged.dim() == 2 and merged.shape == new.shape,
        f"Task vectors of shapes {tuple(merged.shape)} and {tuple(new.shape)}; expected two equal 2-D shapes.",
    )
    # Every entry zeroed (the diagonal, the top r x r block) lies in the leading k x k block of P = U^T new V,
    # k = min(m, n), so the reduced SVD suffices: tau^perp = new - U_k (removed entries of P_kk) V_k^T, exactly
    # U P' V^T of the full bases without forming the [n, n] V of a wide matrix.
    u, s, vh = torch.linalg.svd(merged.float(), full_matrices=False)  # u [m, k], s [k], vh [k, n]
    if not bool(s.sum() > 0):
        return new.float().clone(), 0  # nothing merged yet in this weight: no subspace to protect
    r = split_rank(s, alpha)
    k = s.numel()
    p = u.T @ new.float() @ vh.T  # [k, k], new in the leading (U, V) basis
    removed = torch.zeros(k, k, dtype=torch.bool)
    removed.fill_diagonal_(True)
    removed[:r, :r] = True
    return new.float() - u @ (p * removed) @ vh, r  # [m, n]


class ContinualMerger(Protocol):
    """A merger that takes models one at a time."""

    count: int

    def add(self, model: StateDict) -> None: ...

    def merged(self) -> StateDict: ...


class _Continual:
    """Shared bookkeeping: the base, the names merged, the merged task vector tau_m, the number of models seen."""

    def __init__(self, base: StateDict, exclude: Sequence[str] = ()) -> None:
        if isinstance(exclude, str):
            exclude = (exclude,)
        self.base = base
        self.names = [
            name
            for name, tensor in base.items()
            if tensor.is_floating_point() and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
        ]
        self.tv: dict[str, Tensor] = {}  # merged task vector, float32
        self.count = 0

    def _task_vector(self, model: StateDict) -> Iterator[tuple[str, Tensor]]:
        check_compatible(self.base, [model])
        for name in self.names:
            yield name, task_vector(self.base[name].detach(), model[name].detach(), name)

    def merged(self) -> StateDict:
        """theta_0 + tau_m in the base's dtypes (the base where nothing was merged yet)."""
        out: StateDict = {}
        with torch.no_grad():
            for name, tensor in self.base.items():
                if name in self.tv:
                    out[name] = (tensor.float() + self.tv[name]).to(tensor.dtype)
                else:
                    out[name] = tensor.detach().clone()
        return out


class OPCM(_Continual):
    """Orthogonal-projection continual merging with norm rescaling (module docstring).

    Args:
        base: theta_0, the pre-trained state dict (never modified).
        alpha: cumulative singular-energy fraction that sets the protected rank (the reference's default 0.5).
        linear: names of the Linear weights to project (default: 2-D floating tensors named "*weight").
        exclude: fnmatch patterns of names kept from the base (e.g. task heads).
    """

    def __init__(
        self,
        base: StateDict,
        alpha: float = 0.5,
        linear: Collection[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        super().__init__(base, exclude)
        require(0.0 <= alpha <= 1.0, f"alpha={alpha} is out of range; expected 0 <= alpha <= 1.")
        self.alpha = float(alpha)
        if linear is None:
            linear = [n for n in self.names if base[n].dim() == 2 and n.endswith("weight")]
        unknown = [n for n in linear if n not in base or base[n].dim() != 2]
        require(not unknown, f"Linear weight {unknown[:1]!r} is not a 2-D tensor of the base.")
        self.linear = frozenset(linear)
        self.lambda_ = 1.0  # lambda_{t-1}
        self.norm_sum = 0.0  # sum of the task-vector norms seen
        self.last_split_ranks: dict[str, int] = {}  # per Linear weight, of the last step (diagnostics)

    @property
    def mean_norm(self) -> float:
        return self.norm_sum / max(self.count, 1)

    def add(self, model: StateDict) -> None:
        """Merge the next model (tensor by tensor; the state stays one task vector and a few scalars)."""
        with torch.no_grad():
            tau_sq, new_sq = 0.0, 0.0
            first = self.count == 0
            for name, tau in self._task_vector(model):
                tau_sq += float(tau.pow(2).sum())
                if first:
                    update = tau
                else:
                    prev = self.tv[name]
                    if name in self.linear:
                        cleaned, self.last_split_ranks[name] = _projection(prev, tau, self.alpha)
                    else:
                        cleaned = tau
                    update = self.lambda_ * prev + cleaned  # lambda_{t-1} tau_m + tau_t^perp
                self.tv[name] = update
                new_sq += float(update.pow(2).sum())
            self.count += 1
            self.norm_sum += math.sqrt(tau_sq)
            if first:
                self.lambda_ = 1.0
                return
            norm = math.sqrt(new_sq)
            lam = norm / self.mean_norm if norm > 0 and self.mean_norm > 0 else 1.0
            for name in self.names:
                self.tv[name] /= lam
            self.lambda_ = lam


class ContinualTaskArithmetic(_Continual):
    """theta_t = theta_{t-1} + lambda_ * tau_t (fusion_bench's default lambda_ 0.3)."""

    def __init__(self, base: StateDict, lambda_: float = 0.3, exclude: Sequence[str] = ()) -> None:
        super().__init__(base, exclude)
        self.lambda_ = float(lambda_)

    def add(self, model: StateDict) -> None:
        with torch.no_grad():
            for name, tau in self._task_vector(model):
                self.tv[name] = self.tv[name] + self.lambda_ * tau if name in self.tv else self.lambda_ * tau
            self.count += 1


class ContinualAverage(_Continual):
    """The running mean of the models seen: tau_m <- ((t - 1) tau_m + tau_t) / t."""

    def add(self, model: StateDict) -> None:
        with torch.no_grad():
            t = self.count + 1
            for name, tau in self._task_vector(model):
                self.tv[name] = ((t - 1) * self.tv[name] + tau) / t if name in self.tv else tau
            self.count = t


class ContinualTIES(_Continual):
    """theta_t = theta_{t-1} + lambda_ * TIES-sum(trim(tau_m), trim(tau_t)) (fusion_bench's lambda_ 0.5, top 20%)."""

    def __init__(
        self, base: StateDict, density: float = 0.2, lambda_: float = 0.5, exclude: Sequence[str] = ()
    ) -> None:
        super().__init__(base, exclude)
        require(0.0 < density <= 1.0, f"density={density} is out of range; expected 0 < density <= 1.")
        self.density = float(density)
        self.lambda_ = float(lambda_)

    def add(self, model: StateDict) -> None:
        with torch.no_grad():
            if self.count == 0:
                for name, tau in self._task_vector(model):
                    self.tv[name] = self.lambda_ * tau
                self.count = 1
                return
            thr_m = global_threshold(lambda: (self.tv[n] for n in self.names), self.density)
            thr_t = global_threshold(lambda: (tau for _, tau in self._task_vector(model)), self.density)
            for name, tau in self._task_vector(model):
                prev = self.tv[name]
                trimmed = torch.stack(
                    [prev * magnitude_mask(prev, self.density, thr_m), tau * magnitude_mask(tau, self.density, thr_t)]
                )
                sign = elect_sign(trimmed, torch.ones(2))  # [*shape]
                agree = (torch.sign(trimmed) == sign) & (sign != 0)  # [2, *shape]
                self.tv[name] = prev + self.lambda_ * (trimmed * agree).sum(0)
            self.count += 1


def sequential_merge(merger: ContinualMerger, models: Iterable[StateDict]) -> Iterator[StateDict]:
    """Feed `models` to `merger` one at a time, yielding the merged state dict after each."""
    for model in models:
        merger.add(model)
        yield merger.merged()
