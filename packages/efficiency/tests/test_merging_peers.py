"""Peers of the merge engine: the TIES authors' functions shipped in fusion-bench, and mergekit's `merge_state_dicts`.

On identical random tensors:
- our `task_arithmetic` equals fusion-bench's `TaskArithmeticAlgorithm` and mergekit's "task_arithmetic" (with
  per-model weights and lambda). (fusion-bench 0.2.33's module-level `task_arithmetic_merge` raises a TypeError on
  plain modules: its final `state_dict_add` compares Parameter with Tensor types; the algorithm class works.)
- our global-scope TIES equals the TIES reference code as fusion-bench ships it (`ties_merging_utils.ties_merging`
  on the flattened task vectors, merge_func "mean", and `TiesMergingAlgorithm.run`);
- our per-tensor TIES (scope "tensor") equals mergekit's `merge_state_dicts(..., "ties")`, per-model densities
  (our `model_params`) included.

Intended differences, each shown by a test here rather than hidden by a tolerance:
1. Keep count of the TIES trim. Ours keeps k = round(density * n) entries (plus entries tied with the k-th
   magnitude). The reference `topk_values_mask` thresholds at `kthvalue(n - int(n * K))` with `>=`, which keeps
   int(n * K) + 1 entries per model (one more than K asks for); mergekit's `sparsify.magnitude` keeps
   max(1, int(density * n)) entries (argsort; floor, not round). Equality holds once the counts are aligned: our
   density (int(n * K) + 1) / n for the reference, a density where floor and round agree for mergekit.
2. Zero elected sign. Where the weighted sum of the trimmed deltas is exactly 0 but some deltas are not (e.g. +a and
   -a), ours elects sign 0 and the entry merges to 0; the reference code (`resolve_zero_signs`) assigns the sign of
   the sum of all elected signs (the vector's majority), and mergekit's `get_mask` elects + (sum >= 0), so both
   average the deltas of that sign there.
3. DARE rescale. The DARE paper (and ours) multiplies the survivors by 1 / (1 - p); mergekit's dare_ties and
   dare_linear rescale by the L1-norm ratio ||delta||_1 / ||masked delta||_1 (`rescaled_masked_tensor` with
   `RescaleNorm.l1`), and take the keep fraction `density` = 1 - p. The two agree only in expectation.
4. fusion-bench's task arithmetic has no per-model weights (the sum of task vectors times `scaling_factor`), and
   its TIES config defaults to merge_func "sum"; the paper's disjoint mean is "mean", which is what we compare to.
5. mergekit computes in the inputs' dtype; ours computes in float32 and casts back to the base's dtype (compared
   here on float32 inputs, where both are float32 throughout).

The peers are installed by `make peers` (no-deps installs, see the Makefile); the tests skip when they are absent.
"""

import copy

import pytest
import torch
from torch import nn

from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.sparsify import magnitude_mask

pytestmark = pytest.mark.peers

SHAPES = {"a.weight": (8, 5), "a.bias": (8,), "b.weight": (3, 8), "b.bias": (3,)}


def _state(seed: int, k: int = 4) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    base = {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()}
    models = [{name: t + 0.1 * torch.randn(t.shape, generator=g) for name, t in base.items()} for _ in range(k)]
    return base, models


def _net(state: dict[str, torch.Tensor]) -> nn.Module:
    net = nn.Sequential()
    net.add_module("a", nn.Linear(5, 8))
    net.add_module("b", nn.Linear(8, 3))
    net.load_state_dict(state)
    return net


def _flat(base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    from fusion_bench.method.ties_merging.ties_merging_utils import state_dict_to_vector

    return torch.stack([state_dict_to_vector({n: m[n] - base[n] for n in base}) for m in models])  # (K, n)


def _assert_equal(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert set(ours) == set(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6, msg=name)


# --- fusion-bench: the TIES authors' code ---------------------------------------------------------------------------


def test_task_arithmetic_equals_fusion_bench():
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.task_arithmetic.task_arithmetic import TaskArithmeticAlgorithm

    base, models = _state(0)
    ours = merge(base, models, "task_arithmetic", lambda_=0.3)
    pool = {"_pretrained_": _net(base), **{f"m{i}": _net(m) for i, m in enumerate(models)}}
    _assert_equal(ours, TaskArithmeticAlgorithm(scaling_factor=0.3).run(pool).state_dict())


def test_reference_trim_keeps_one_more_than_asked():
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.ties_merging.ties_merging_utils import topk_values_mask

    base, models = _state(1)
    flat = _flat(base, models)  # (K, n)
    n = flat.shape[1]
    for density in (0.2, 0.4, 0.6):
        trimmed, _ = topk_values_mask(flat.clone(), K=density)
        theirs = (trimmed != 0).sum(dim=1)  # (K,)
        ours = torch.stack([magnitude_mask(row, density).sum() for row in flat])
        assert theirs.tolist() == [int(n * density) + 1] * len(models)
        assert ours.tolist() == [round(n * density)] * len(models)


@pytest.mark.parametrize("density", [0.2, 0.4, 0.6])
def test_global_ties_equals_reference_ties_merging(density):
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.ties_merging.ties_merging_utils import ties_merging, vector_to_state_dict

    base, models = _state(2, k=5)
    flat = _flat(base, models)
    n = flat.shape[1]
    merged_tv = ties_merging(flat, reset_thresh=density, merge_func="mean")  # (n,)
    reference = vector_to_state_dict(merged_tv, {k: v.clone() for k, v in base.items()})
    theirs = {k: base[k] + 0.7 * reference[k] for k in base}
    assert int(n * density) + 1 != round(n * density)  # n = 75: these densities tell the two keep counts apart
    aligned = (int(n * density) + 1) / n  # the reference's keep count (difference 1 of the docstring)
    _assert_equal(merge(base, models, "ties", density=aligned, scope="global", lambda_=0.7), theirs)
    # at the same density the trims differ by one entry per model, and so do the merges
    unaligned = merge(base, models, "ties", density=density, scope="global", lambda_=0.7)
    assert any(not torch.allclose(unaligned[k], theirs[k], atol=1e-6) for k in base)


def test_global_ties_equals_fusion_bench_algorithm():
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.ties_merging.ties_merging import TiesMergingAlgorithm

    base, models = _state(3)
    n = sum(t.numel() for t in base.values())
    pool = {"_pretrained_": _net(base), **{f"m{i}": _net(m) for i, m in enumerate(models)}}
    algorithm = TiesMergingAlgorithm(scaling_factor=0.5, threshold=20, remove_keys=[], merge_func="mean")
    theirs = algorithm.run(copy.deepcopy(pool)).state_dict()  # threshold 20 (> 1) means 20 %
    ours = merge(base, models, "ties", density=(int(n * 0.2) + 1) / n, scope="global", lambda_=0.5)
    _assert_equal(ours, theirs)


def test_zero_sum_sign_differs_from_reference():
    pytest.importorskip("fusion_bench")
    from fusion_bench.method.ties_merging.ties_merging_utils import ties_merging

    # entry 0: +1 and -1 cancel; entries 1-3: positive majority, so the reference resolves entry 0 to +
    flat = torch.tensor([[1.0, 2.0, 2.0, 2.0], [-1.0, 1.0, 1.0, 1.0]])
    theirs = ties_merging(flat.clone(), reset_thresh=0.99, merge_func="mean")
    base = {"w": torch.zeros(4)}
    ours = merge(base, [{"w": row} for row in flat], "ties", density=1.0, scope="global")["w"]
    torch.testing.assert_close(theirs, torch.tensor([1.0, 1.5, 1.5, 1.5]))
    torch.testing.assert_close(ours, torch.tensor([0.0, 1.5, 1.5, 1.5]))


# --- mergekit -------------------------------------------------------------------------------------------------------


def _mergekit(base, models, method, parameters):
    from mergekit.merge_methods.api import merge_state_dicts

    inputs = {"base": base, **{f"m{i}": m for i, m in enumerate(models)}}
    return merge_state_dicts(inputs, method, parameters=parameters, base="base")


def test_task_arithmetic_equals_mergekit_with_weights():
    pytest.importorskip("mergekit")
    base, models = _state(4)
    weights = [1.0, 0.5, 2.0, 0.25]
    theirs = _mergekit(
        base, models, "task_arithmetic", {"weight": {f"m{i}": w for i, w in enumerate(weights)}, "lambda": 0.8}
    )
    _assert_equal(merge(base, models, "task_arithmetic", weights=weights, lambda_=0.8), theirs)


@pytest.mark.parametrize("density", [0.25, 0.75])
def test_tensor_ties_equals_mergekit(density):
    pytest.importorskip("mergekit")
    base, models = _state(5)
    weights = [1.0, 0.5, 2.0, 0.25]
    # densities where floor(density * n) == round(density * n) for every tensor (8, 40, 24 and 3 entries)
    for n in (t.numel() for t in base.values()):
        assert max(1, int(density * n)) == round(density * n)
    theirs = _mergekit(
        base, models, "ties", {"density": density, "weight": {f"m{i}": w for i, w in enumerate(weights)}, "lambda": 0.6}
    )
    _assert_equal(merge(base, models, "ties", density=density, scope="tensor", weights=weights, lambda_=0.6), theirs)


def test_tensor_ties_per_model_density_equals_mergekit():
    pytest.importorskip("mergekit")
    base, models = _state(6)
    densities = [0.25, 0.75, 1.0, 0.25]
    theirs = _mergekit(base, models, "ties", {"density": {f"m{i}": d for i, d in enumerate(densities)}, "weight": 1.0})
    ours = merge(base, models, "ties", scope="tensor", model_params=[{"density": d} for d in densities])
    _assert_equal(ours, theirs)


def test_mergekit_keeps_floor_of_density_times_n():
    pytest.importorskip("mergekit")
    from mergekit.sparsify import magnitude

    delta = torch.randn(10, generator=torch.Generator().manual_seed(7))
    # 0.35 * 10 = 3.5: mergekit keeps int(3.5) = 3, ours round(3.5) = 4 (Python rounds half to even: 4)
    assert int((magnitude(delta, 0.35) != 0).sum()) == 3
    assert int(magnitude_mask(delta, 0.35).sum()) == 4
    base, models = _state(8)
    theirs = _mergekit(base, models, "ties", {"density": 0.35, "weight": 1.0})
    ours = merge(base, models, "ties", density=0.35, scope="tensor")
    assert any(not torch.allclose(ours[k], theirs[k], atol=1e-6) for k in base)


def test_zero_sum_sign_differs_from_mergekit():
    pytest.importorskip("mergekit")
    base = {"w": torch.zeros(3)}
    models = [{"w": torch.tensor([1.0, -2.0, 3.0])}, {"w": torch.tensor([-1.0, -2.0, 1.0])}]
    theirs = _mergekit(base, models, "ties", {"density": 1.0, "weight": 1.0})["w"]
    ours = merge(base, models, "ties", density=1.0, scope="tensor")["w"]
    torch.testing.assert_close(theirs, torch.tensor([1.0, -2.0, 2.0]))  # + elected where the sum is 0
    torch.testing.assert_close(ours, torch.tensor([0.0, -2.0, 2.0]))


def test_mergekit_dare_rescales_by_l1_norm_not_one_over_keep():
    pytest.importorskip("mergekit")
    from mergekit.sparsify import RescaleNorm, rescaled_masked_tensor

    from paperzoo.efficiency.merging.sparsify import generator_for, random_drop

    delta = torch.randn(1000, generator=torch.Generator().manual_seed(9))
    p = 0.9
    ours = random_drop(delta, p, generator_for(0, 0, "w"))
    mask = ours != 0
    torch.testing.assert_close(ours[mask], delta[mask] / (1 - p))  # the DARE paper's 1 / (1 - p)
    theirs = rescaled_masked_tensor(delta, mask.to(delta.dtype), RescaleNorm.l1)  # mergekit, on the same mask
    l1_ratio = delta.abs().sum() / delta[mask].abs().sum()
    torch.testing.assert_close(theirs[mask], delta[mask] * l1_ratio)
    assert not torch.isclose(l1_ratio, torch.tensor(1 / (1 - p)), rtol=1e-2)  # not the same factor on this mask
