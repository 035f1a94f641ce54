"""Weight matching and the analysis of linear mode connectivity of arXiv:2402.04051.

Paper: Ito, Yamada and Kumagai, "Analysis of Linear Mode Connectivity via Permutation-Based Weight Matching: With
Insights into Other Permutation Search Methods", https://arxiv.org/abs/2402.04051. The algorithm is
git re-basin's weight matching (Ainsworth et al., arXiv:2209.04836, Algorithm 1).

Implemented:
- `weight_matching`: find hidden-unit permutations of model B maximising sum_l <W_l^A, P_l W_l^B P_{l-1}^T> (the
  same as minimising the L2 distance ||theta_A - pi(theta_B)||) by coordinate descent: each step fixes every
  permutation but one, which then enters linearly, and solves that one exactly with the Hungarian algorithm
  (`scipy.optimize.linear_sum_assignment`); permutations are visited in a fresh random order each sweep, until a
  sweep brings no improvement. Biases and every tensor an axis of the permutation touches enter the cost.
- `straight_through_matching`: the data-driven straight-through estimator (STE) of git re-basin (Algorithm 2): a
  free copy theta~ of the weights is trained so that the midpoint (theta_A + pi(theta_B)) / 2 has low loss, where
  pi = weight_matching(theta~, theta_B) and the gradient passes straight through the projection onto pi(theta_B).
- The analysis: `interpolate`, `linear_path`, `loss_barrier` (max over t of loss(theta_t) - ((1 - t) loss_A +
  t loss_B)), `l2_distance` and `relative_distance_reduction`, `singular_vector_alignment` (per index i, the cosine
  between the rank-one components u_i v_i^T of two matrices, |<u_i^A, u_i^B>| |<v_i^A, v_i^B>|, which the
  permutation moves while singular values stay fixed), and `merge_aligned` for K-way merges (align every model to
  the first, then average).

Deviations: the paper's experiments use MLPs, VGG and ResNets on MNIST/FMNIST/CIFAR; the claim check
(`checks/weight_matching.py`) uses small ReLU MLPs and conv nets on the merging testbed's data. The alignment
measure per singular index is our reading of the paper's cosine-similarity plots.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from paperzoo.core.errors import require
from paperzoo.efficiency.merging.alignment.permutation import (
    Permutation,
    PermutationSpec,
    apply_permutation,
    identity_permutation,
    permutation_sizes,
    permute_tensor,
)
from paperzoo.efficiency.merging.task_vector import StateDict

__all__ = [
    "WeightMatching",
    "interpolate",
    "l2_distance",
    "linear_path",
    "loss_barrier",
    "matching_objective",
    "merge_aligned",
    "relative_distance_reduction",
    "singular_vector_alignment",
    "straight_through_matching",
    "weight_matching",
]


@dataclass
class WeightMatching:
    """The result of `weight_matching`.

    Args:
        perm: the permutations to apply to model B (`apply_permutation(spec, perm, b)` is B aligned to A).
        objective: the objective sum <theta_A, pi(theta_B)> over the spec's tensors, at the start and after every
            coordinate step (never decreasing).
        sweeps: the number of sweeps over all permutations run.
    """

    perm: Permutation
    objective: list[float] = field(default_factory=list)
    sweeps: int = 0


def _unit_matrix(tensor: Tensor, axis: int, group: int, n: int) -> Tensor:
    """`tensor` with `axis` moved first and reshaped to [n, everything else] (a unit's `group` entries together)."""
    return tensor.movedim(axis, 0).reshape(n, -1).double()


def matching_objective(
    spec: PermutationSpec, perm: Permutation, a: Mapping[str, Tensor], b: Mapping[str, Tensor]
) -> float:
    """sum over the spec's tensors of <a[key], pi(b)[key]> (the L2 distance is ||a||^2 + ||b||^2 - 2 this)."""
    total = 0.0
    for key in spec.axes_to_perm:
        total += float((a[key].double() * permute_tensor(spec, perm, key, b[key]).double()).sum())
    return total


def _cost(
    spec: PermutationSpec, perm: Permutation, name: str, n: int, a: Mapping[str, Tensor], b: Mapping[str, Tensor]
):
    """cost[i, j] = <unit i of A, unit j of B> summed over every tensor axis of permutation `name`, the other
    permutations applied to B; the objective is const + sum_i cost[i, perm[i]]."""
    cost = torch.zeros(n, n, dtype=torch.float64)
    for key, axis, group in spec.perm_to_axes[name]:
        w_a = _unit_matrix(a[key], axis, group, n)  # [n, rest]
        w_b = _unit_matrix(permute_tensor(spec, perm, key, b[key], except_axis=axis), axis, group, n)
        cost += w_a @ w_b.T
    return cost


def weight_matching(
    spec: PermutationSpec,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    *,
    max_sweeps: int = 100,
    seed: int = 0,
    init: Permutation | None = None,
) -> WeightMatching:
    """Permutations of B's hidden units that maximise its inner product with A (minimise the L2 distance).

    Args:
        spec: which axes each permutation acts on.
        a, b: state dicts with the same keys and shapes (not mutated).
        max_sweeps: the most sweeps over all permutations.
        seed: seeds the random order of permutations within each sweep.
        init: starting permutations (default: identity).

    Returns:
        The permutations, the objective after every coordinate step, and the sweeps run.
    """
    require(max_sweeps >= 1, f"max_sweeps {max_sweeps} must be >= 1")
    sizes = permutation_sizes(spec, a)
    require(sizes == permutation_sizes(spec, b), f"unit counts of A {sizes} and B {permutation_sizes(spec, b)} differ")
    perm = {k: v.clone() for k, v in (init or identity_permutation(spec, a)).items()}
    objective = [matching_objective(spec, perm, a, b)]
    names = list(spec.names)
    rng = np.random.default_rng(seed)
    sweeps = 0
    for _ in range(max_sweeps):
        sweeps += 1
        progress = False
        for index in rng.permutation(len(names)):
            name = names[index]
            n = sizes[name]
            cost = _cost(spec, perm, name, n, a, b)
            rows = torch.arange(n)
            old = float(cost[rows, perm[name]].sum())
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            new = float(cost[rows, torch.as_tensor(cols)].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                # only a strict improvement moves the permutation, so ties never cycle
                perm[name] = torch.as_tensor(cols, dtype=torch.int64)
                objective.append(objective[-1] + new - old)
                progress = True
            else:
                objective.append(objective[-1])
        if not progress:
            break
    return WeightMatching(perm=perm, objective=objective, sweeps=sweeps)


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], t: float) -> StateDict:
    """(1 - t) a + t b, key by key (new tensors)."""
    require(a.keys() == b.keys(), "the two state dicts must have the same keys")
    return {key: torch.lerp(a[key].float(), b[key].float(), t).to(a[key].dtype) for key in a}


def merge_aligned(states: Sequence[Mapping[str, Tensor]]) -> StateDict:
    """The uniform average of `states` (already aligned to each other, e.g. every model matched to the first)."""
    require(len(states) >= 1, "merge_aligned needs at least one state dict")
    return {key: torch.stack([s[key].float() for s in states]).mean(0).to(states[0][key].dtype) for key in states[0]}


def linear_path(
    evaluate: Callable[[StateDict], float], a: Mapping[str, Tensor], b: Mapping[str, Tensor], ts: Iterable[float]
) -> list[float]:
    """`evaluate` (e.g. the test loss) at each point (1 - t) a + t b of the linear path."""
    return [evaluate(interpolate(a, b, float(t))) for t in ts]


def loss_barrier(values: Sequence[float], ts: Sequence[float]) -> float:
    """max over t of values(t) - ((1 - t) values(0) + t values(1)): the height of the bump above the straight line
    between the endpoints (`ts` must start at 0 and end at 1). For an accuracy, pass the negated accuracies."""
    require(len(values) == len(ts) >= 2, f"need matching values and ts of length >= 2, got {len(values)}, {len(ts)}")
    require(ts[0] == 0.0 and ts[-1] == 1.0, f"ts must run from 0 to 1, got {ts[0]} .. {ts[-1]}")
    line = [(1 - t) * values[0] + t * values[-1] for t in ts]
    return max(v - li for v, li in zip(values, line, strict=True))


def l2_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], keys: Iterable[str] | None = None) -> float:
    """||a - b||_2 over `keys` (default: all of a's)."""
    keys = list(a) if keys is None else list(keys)
    return float(sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys) ** 0.5)


def relative_distance_reduction(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], b_aligned: Mapping[str, Tensor], keys: Iterable[str] | None = None
) -> float:
    """(||a - b|| - ||a - pi(b)||) / ||a - b||: the fraction of the L2 distance the permutation removes."""
    keys = list(a) if keys is None else list(keys)
    before = l2_distance(a, b, keys)
    return (before - l2_distance(a, b_aligned, keys)) / before


def singular_vector_alignment(w_a: Tensor, w_b: Tensor, k: int | None = None) -> Tensor:
    """Per singular index i (singular values in descending order), |<u_i^A, u_i^B>| * |<v_i^A, v_i^B>|: the cosine
    between the rank-one components u_i v_i^T of the two matrices (sign-free). 1 when the i-th singular directions
    coincide, about 1/sqrt(dim) for unrelated ones.

    Args:
        w_a, w_b: matrices of the same shape [out, in] (conv kernels: flatten to [out, in * kh * kw] first).
        k: the number of leading indices (default: all).

    Returns:
        [k] float64 tensor.
    """
    require(w_a.shape == w_b.shape and w_a.ndim == 2, f"need two matrices of one shape, got {w_a.shape}, {w_b.shape}")
    u_a, _, vh_a = torch.linalg.svd(w_a.double(), full_matrices=False)
    u_b, _, vh_b = torch.linalg.svd(w_b.double(), full_matrices=False)
    k = u_a.shape[1] if k is None else min(k, u_a.shape[1])
    left = (u_a[:, :k] * u_b[:, :k]).sum(0).abs()  # [k]
    right = (vh_a[:k] * vh_b[:k]).sum(1).abs()  # [k]
    return left * right


def straight_through_matching(
    spec: PermutationSpec,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    loss: Callable[[StateDict, Tensor, Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    lr: float = 1e-3,
    seed: int = 0,
) -> WeightMatching:
    """The straight-through estimator (git re-basin, Algorithm 2): learn a free copy theta~ (initialised at A)
    whose weight-matching projection onto B's permutation orbit puts the midpoint with A at low loss.

    Each step: pi = weight_matching(theta~, B); theta_proj = pi(B) + theta~ - stopgrad(theta~) (forward value pi(B),
    gradient into theta~); minimise loss((A + theta_proj) / 2) on the batch with an Adam step on theta~. The returned
    permutation is the weight matching of the final theta~ onto B; `objective` holds the midpoint loss per step.

    Args:
        spec: which axes each permutation acts on.
        a, b: state dicts (not mutated).
        loss: `loss(state, x, y)` -> scalar differentiable in the state's tensors (e.g. through
            `torch.func.functional_call`).
        batches: the training batches, one per step.
        lr: Adam's learning rate for theta~ (git re-basin's optimiser).
        seed: seeds weight matching's layer order.
    """
    free = {key: a[key].detach().clone().float().requires_grad_(True) for key in a}
    optimizer = torch.optim.Adam(list(free.values()), lr=lr)
    perm = identity_permutation(spec, a)
    history: list[float] = []
    for step, (x, y) in enumerate(batches):
        with torch.no_grad():
            anchor = {k: v.detach() for k, v in free.items()}
        perm = weight_matching(spec, anchor, b, seed=seed + step, init=perm).perm
        projected = apply_permutation(spec, perm, b)
        midpoint = {k: 0.5 * (a[k].float() + projected[k].float() + free[k] - free[k].detach()) for k in a}
        value = loss(midpoint, x, y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    require(len(history) > 0, "straight_through_matching needs at least one batch")
    final = weight_matching(spec, {k: v.detach() for k, v in free.items()}, b, seed=seed, init=perm).perm
    return WeightMatching(perm=final, objective=history, sweeps=len(history))
