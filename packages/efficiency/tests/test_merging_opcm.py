"""OPCM and the continual baselines: hand-computed projections and norm rescaling, a naive whole-history reference,
constant state size, and the continual task arithmetic / averaging / TIES rules."""

import math

import pytest
import torch
from torch import nn

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.opcm import (
    OPCM,
    ContinualAverage,
    ContinualTaskArithmetic,
    ContinualTIES,
    linear_weight_names,
    orthogonal_projection,
    sequential_merge,
    split_rank,
)
from paperzoo.efficiency.merging.procedure import merge


def test_split_rank_is_the_first_index_past_alpha() -> None:
    assert split_rank(torch.tensor([3.0, 1.0]), 0.5) == 0  # 0.75 > 0.5 at index 0
    assert split_rank(torch.tensor([5.0, 3.0, 2.0]), 0.7) == 1  # cumulative 0.5, 0.8, 1.0
    assert split_rank(torch.tensor([5.0, 3.0, 2.0]), 0.85) == 2
    assert split_rank(torch.tensor([5.0, 3.0, 2.0]), 0.5) == 1  # 0.5 is not > 0.5


def test_projection_hand_case_identity_basis() -> None:
    merged = torch.diag(torch.tensor([5.0, 3.0, 2.0]))  # U = V = I up to signs that cancel
    new = torch.ones(3, 3)
    # alpha 0.85 -> r = 2: the diagonal and the top 2x2 block go
    expected = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    torch.testing.assert_close(orthogonal_projection(merged, new, 0.85), expected, atol=1e-6, rtol=0)
    # alpha 0.5 -> r = 1: only the diagonal
    torch.testing.assert_close(
        orthogonal_projection(merged, new, 0.5), torch.ones(3, 3) - torch.eye(3), atol=1e-6, rtol=0
    )
    # a zero merged task vector protects nothing
    torch.testing.assert_close(orthogonal_projection(torch.zeros(3, 3), new, 0.5), new)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_projection_is_orthogonal_to_the_kept_subspace(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    merged, new = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    alpha = 0.6
    u, s, vh = torch.linalg.svd(merged, full_matrices=True)
    r = split_rank(s, alpha)
    assert r >= 1  # the block is not empty for random matrices at alpha 0.6
    cleaned = orthogonal_projection(merged, new, alpha)
    p_clean, p_new = u.T @ cleaned @ vh.T, u.T @ new @ vh.T
    torch.testing.assert_close(p_clean[:r, :r], torch.zeros(r, r), atol=1e-5, rtol=0)
    torch.testing.assert_close(p_clean.diagonal(), torch.zeros(min(shape)), atol=1e-5, rtol=0)
    # u_i^T cleaned v_i = 0 for every i: orthogonal (Frobenius) to each rank-one component of merged
    assert abs(float((cleaned * merged).sum())) < 1e-4
    # everything else is untouched
    keep = torch.ones(shape, dtype=torch.bool)
    keep[:r, :r] = False
    keep[range(min(shape)), range(min(shape))] = False
    torch.testing.assert_close(p_clean[keep], p_new[keep], atol=1e-5, rtol=1e-5)


def test_opcm_two_step_hand_case() -> None:
    base = {"l.weight": torch.zeros(2, 2), "l.bias": torch.zeros(2)}
    m1 = {"l.weight": torch.diag(torch.tensor([3.0, 1.0])), "l.bias": torch.tensor([1.0, 0.0])}
    m2 = {"l.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "l.bias": torch.tensor([0.0, 2.0])}
    opcm = OPCM(base, alpha=0.5)
    opcm.add(m1)
    assert opcm.lambda_ == 1.0
    assert all(torch.equal(opcm.merged()[k], m1[k]) for k in m1)  # the first model as is
    check_no_mutation(opcm.add, model=m2)
    # w: diagonal of m2 removed in the identity basis (r = 0) -> [[0, 2], [3, 0]]; b unprojected
    unscaled_w, unscaled_b = torch.tensor([[3.0, 2.0], [3.0, 1.0]]), torch.tensor([1.0, 2.0])
    mean_norm = (math.sqrt(11) + math.sqrt(34)) / 2  # ||tau_1|| = sqrt(9 + 1 + 1), ||tau_2|| = sqrt(1+4+9+16+4)
    lam = math.sqrt(28) / mean_norm  # the whole model's unscaled norm over the mean
    assert opcm.lambda_ == pytest.approx(lam)
    merged = opcm.merged()
    torch.testing.assert_close(merged["l.weight"], unscaled_w / lam)
    torch.testing.assert_close(merged["l.bias"], unscaled_b / lam)
    norm = math.sqrt(float(merged["l.weight"].pow(2).sum() + merged["l.bias"].pow(2).sum()))
    assert norm == pytest.approx(mean_norm)


def naive_opcm(base: dict, models: list[dict], alpha: float, linear: set[str]) -> list[dict]:
    """Whole-history reference: keeps every model, recomputes the running mean norm from the list each step."""
    taus = [{k: m[k] - base[k] for k in base} for m in models]
    out, tv, lam_prev = [], dict(taus[0]), 1.0
    out.append({k: base[k] + tv[k] for k in base})
    for t in range(1, len(models)):
        unscaled = {}
        for k in base:
            cleaned = taus[t][k]
            if k in linear:
                u, s, vh = torch.linalg.svd(tv[k], full_matrices=True)
                r = int(((s.cumsum(0) / s.sum()) > alpha).float().argmax())
                p = u.T @ taus[t][k] @ vh.T
                for i in range(min(p.shape)):
                    p[i, i] = 0.0
                p[:r, :r] = 0.0
                cleaned = u @ p @ vh
            unscaled[k] = lam_prev * tv[k] + cleaned
        mean = sum(math.sqrt(sum(float(x[k].pow(2).sum()) for k in base)) for x in taus[: t + 1]) / (t + 1)
        lam = math.sqrt(sum(float(v.pow(2).sum()) for v in unscaled.values())) / mean
        tv = {k: v / lam for k, v in unscaled.items()}
        lam_prev = lam
        out.append({k: base[k] + tv[k] for k in base})
    return out


def random_models(count: int, seed: int = 0) -> tuple[dict, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    base = {"l1.weight": torch.randn(6, 5, generator=g), "l1.bias": torch.randn(6, generator=g)}
    base["conv.weight"] = torch.randn(2, 1, 3, 3, generator=g)
    models = [{k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(count)]
    return base, models


def test_opcm_matches_naive_reference_and_keeps_the_mean_norm() -> None:
    base, models = random_models(4)
    linear = {"l1.weight"}
    opcm = OPCM(base, alpha=0.5, linear=linear)
    expected = naive_opcm(base, models, 0.5, linear)
    norms = []
    for step, merged in enumerate(sequential_merge(opcm, models)):
        for k in base:
            torch.testing.assert_close(merged[k], expected[step][k], atol=1e-5, rtol=1e-5)
        norms.append(math.sqrt(sum(float((models[step][k] - base[k]).pow(2).sum()) for k in base)))
        merged_norm = math.sqrt(sum(float((merged[k] - base[k]).pow(2).sum()) for k in base))
        assert merged_norm == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def test_opcm_state_does_not_grow_with_the_number_of_models() -> None:
    base, models = random_models(5, seed=1)
    opcm = OPCM(base)
    sizes = []
    for model in models:
        opcm.add(model)
        held = [v for v in vars(opcm).values() if isinstance(v, torch.Tensor)]
        held += [
            t for v in vars(opcm).values() if isinstance(v, dict) for t in v.values() if isinstance(t, torch.Tensor)
        ]
        sizes.append(sum(t.numel() for t in held if all(t is not b for b in base.values())))
    assert len(set(sizes)) == 1 and sizes[0] == sum(v.numel() for v in base.values())


def test_opcm_default_linear_names_excludes_and_errors() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert linear_weight_names(net, "backbone.") == ["backbone.0.weight", "backbone.2.weight"]
    base = {"a.weight": torch.zeros(3, 2), "a.bias": torch.zeros(3), "head.weight": torch.zeros(2, 2)}
    opcm = OPCM(base, exclude=("head.*",))
    assert opcm.linear == {"a.weight"}
    opcm.add({k: v + 1 for k, v in base.items()})
    assert torch.equal(opcm.merged()["head.weight"], base["head.weight"])
    with pytest.raises(ConfigError):
        OPCM(base, alpha=1.5)
    with pytest.raises(ConfigError):
        OPCM(base, linear=["a.bias"])


def test_continual_task_arithmetic_and_average_equal_the_engine_at_every_step() -> None:
    base, models = random_models(3, seed=2)
    ta, avg = ContinualTaskArithmetic(base, lambda_=0.3), ContinualAverage(base)
    for step, (m_ta, m_avg) in enumerate(zip(sequential_merge(ta, models), sequential_merge(avg, models), strict=True)):
        seen = models[: step + 1]
        e_ta = merge(base, seen, "task_arithmetic", lambda_=0.3)
        e_avg = merge(base, seen, "average")
        for k in base:
            torch.testing.assert_close(m_ta[k], e_ta[k], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(m_avg[k], e_avg[k], atol=1e-5, rtol=1e-5)


def test_continual_ties_hand_case() -> None:
    base = {"v": torch.zeros(3)}
    first, second = {"v": torch.tensor([2.0, -4.0, 6.0])}, {"v": torch.tensor([2.0, 1.0, -4.0])}
    # no trim: tau_m = 0.5 * first = [1, -2, 3]; signs of [1, -2, 3] + [2, 1, -4] = [+, -, -];
    # disjoint sum = [1 + 2, -2, -4]
    ties = ContinualTIES(base, density=1.0, lambda_=0.5)
    ties.add(first)
    torch.testing.assert_close(ties.merged()["v"], torch.tensor([1.0, -2.0, 3.0]))
    ties.add(second)
    torch.testing.assert_close(
        ties.merged()["v"], torch.tensor([1.0, -2.0, 3.0]) + 0.5 * torch.tensor([3.0, -2.0, -4.0])
    )
    # density 2/3 keeps 2 of 3 entries per vector: [0, -2, 3] and [2, 0, -4]; signs [+, -, -]; sum [2, -2, -4]
    trimmed = ContinualTIES(base, density=2 / 3, lambda_=0.5)
    for model in (first, second):
        trimmed.add(model)
    torch.testing.assert_close(
        trimmed.merged()["v"], torch.tensor([1.0, -2.0, 3.0]) + 0.5 * torch.tensor([2.0, -2.0, -4.0])
    )


def test_check_summary_uses_intermediate_steps_for_the_order_std() -> None:
    from paperzoo.efficiency.merging.checks.opcm import _summary

    # two orders, three steps of (accuracy, normalized)
    per_order = [[(0.9, 1.0), (0.7, 0.8), (0.6, 0.7)], [(0.8, 0.9), (0.5, 0.6), (0.6, 0.7)]]
    got = _summary(per_order)
    assert got["final_normalized_mean"] == pytest.approx(0.7) and got["final_normalized_std"] == pytest.approx(0.0)
    assert got["intermediate_normalized_std"] == pytest.approx(0.1)  # step 2 only: pstdev(0.8, 0.6)
    assert got["step_1_normalized_mean"] == pytest.approx(0.95)


@pytest.mark.slow
def test_quick_claim_check_runs() -> None:
    from paperzoo.efficiency.merging.checks.opcm import check

    result = check(quick=True)
    assert len(result.criteria) == 4
    assert set(result.curves) == {
        "opcm",
        "continual_task_arithmetic_tuned",
        "continual_task_arithmetic",
        "continual_average",
        "continual_ties",
    }
    assert 0.0 < result.method["final_accuracy_mean"] <= 1.0
