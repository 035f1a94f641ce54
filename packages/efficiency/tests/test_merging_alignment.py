"""Alignment-based merging: hidden-unit permutations, weight matching and its analysis, PLeaS."""

import itertools

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.alignment.permutation import (
    MLP,
    ConvNet,
    PermutationSpec,
    apply_permutation,
    compose,
    convnet_permutation_spec,
    identity_permutation,
    inverse,
    mlp_permutation_spec,
    random_permutation,
)
from paperzoo.efficiency.merging.alignment.pleas import (
    LayerMatch,
    activation_correlation,
    identity_matches,
    masked_least_squares,
    match_layers,
    merged_width,
    mlp_activations,
    num_merged_for_width,
    partial_match,
    pleas_merge,
    zip_merge,
)
from paperzoo.efficiency.merging.alignment.weight_matching import (
    interpolate,
    l2_distance,
    loss_barrier,
    matching_objective,
    merge_aligned,
    relative_distance_reduction,
    singular_vector_alignment,
    straight_through_matching,
    weight_matching,
)


def mlp_state(widths=(8, 8, 8), classes=3, seed=0, in_features=10, dtype=torch.float64):
    torch.manual_seed(seed)
    model = MLP(in_features, widths, classes).to(dtype)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_mlp(state, x):
    with torch.no_grad():
        return MLP.from_state(state).to(x.dtype)(x)


def is_permutation(p: torch.Tensor) -> bool:
    return torch.equal(torch.sort(p).values, torch.arange(len(p)))


# --- permutations ------------------------------------------------------------------------------------------------
def test_mlp_permutation_leaves_function_unchanged():
    state = mlp_state()
    spec = mlp_permutation_spec(3)
    perm = random_permutation(spec, state, seed=1)
    assert all(not torch.equal(p, torch.arange(len(p))) for p in perm.values())
    permuted = apply_permutation(spec, perm, state)
    assert not torch.equal(permuted["hidden.1.weight"], state["hidden.1.weight"])
    x = torch.randn(32, 10, dtype=torch.float64)
    torch.testing.assert_close(run_mlp(permuted, x), run_mlp(state, x), rtol=1e-12, atol=1e-12)


def test_permuted_hidden_features_are_the_permuted_units():
    state = mlp_state(widths=(6,))
    spec = mlp_permutation_spec(1)
    perm = random_permutation(spec, state, seed=2)
    x = torch.randn(5, 10, dtype=torch.float64)
    original = MLP.from_state(state).to(torch.float64).features(x)
    permuted = MLP.from_state(apply_permutation(spec, perm, state)).to(torch.float64).features(x)
    torch.testing.assert_close(permuted, original[:, perm["P0"]], rtol=0, atol=0)


def test_convnet_permutation_leaves_function_unchanged():
    torch.manual_seed(0)
    model = ConvNet([3, 5], [7], 4).double()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spec = convnet_permutation_spec(2, 1, model.positions)
    permuted = apply_permutation(spec, random_permutation(spec, state, seed=3), state)
    other = ConvNet([3, 5], [7], 4).double()
    other.load_state_dict(permuted)
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=1e-12, atol=1e-12)


def test_apply_permutation_does_not_mutate_or_alias():
    state = mlp_state()
    spec = mlp_permutation_spec(3)
    perm = random_permutation(spec, state)
    out = check_no_mutation(apply_permutation, spec=spec, perm=perm, state=state)
    for key in state:
        assert out[key].data_ptr() != state[key].data_ptr()


def test_inverse_and_compose():
    state = mlp_state()
    spec = mlp_permutation_spec(3)
    p, q = random_permutation(spec, state, 1), random_permutation(spec, state, 2)
    back = apply_permutation(spec, inverse(p), apply_permutation(spec, p, state))
    assert all(torch.equal(back[k], state[k]) for k in state)
    twice = apply_permutation(spec, q, apply_permutation(spec, p, state))
    once = apply_permutation(spec, compose(p, q), state)
    assert all(torch.equal(twice[k], once[k]) for k in state)


def test_spec_errors():
    with pytest.raises(ConfigError, match="claimed by both"):
        PermutationSpec({"P": (("w", 0, 1),), "Q": (("w", 0, 1),)})
    state = mlp_state()
    spec = mlp_permutation_spec(3)
    bad = identity_permutation(spec, state) | {"P1": torch.arange(5)}
    with pytest.raises(ConfigError, match="does not fit axis"):
        apply_permutation(spec, bad, state)
    with pytest.raises(ConfigError, match="missing"):
        apply_permutation(spec, {"P0": torch.arange(8)}, state)


# --- weight matching ---------------------------------------------------------------------------------------------
def test_weight_matching_recovers_a_known_permutation_exactly():
    a = mlp_state(widths=(16, 16, 16))
    spec = mlp_permutation_spec(3)
    b = apply_permutation(spec, random_permutation(spec, a, seed=5), a)
    result = weight_matching(spec, a, b, seed=0)
    aligned = apply_permutation(spec, result.perm, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    assert relative_distance_reduction(a, b, aligned) == pytest.approx(1.0)


def test_weight_matching_recovers_convnet_permutation():
    torch.manual_seed(1)
    model = ConvNet([4, 6], [10], 3)
    a = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spec = convnet_permutation_spec(2, 1, model.positions)
    b = apply_permutation(spec, random_permutation(spec, a, seed=9), a)
    aligned = apply_permutation(spec, weight_matching(spec, a, b).perm, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


def test_weight_matching_objective_never_decreases():
    a, b = mlp_state(widths=(12, 12, 12), seed=0), mlp_state(widths=(12, 12, 12), seed=1)
    spec = mlp_permutation_spec(3)
    result = check_no_mutation(weight_matching, spec=spec, a=a, b=b, seed=3)
    history = torch.tensor(result.objective)
    assert (history[1:] >= history[:-1] - 1e-9).all()
    assert history[-1] > history[0]
    assert result.objective[-1] == pytest.approx(matching_objective(spec, result.perm, a, b), rel=1e-9)
    assert all(is_permutation(p) for p in result.perm.values())
    # the objective is the L2 distance in disguise: ||a - pi(b)||^2 = ||a||^2 + ||b||^2 - 2 <a, pi(b)>
    aligned = apply_permutation(spec, result.perm, b)
    keys = list(spec.axes_to_perm)
    norms = sum(float(a[k].pow(2).sum() + b[k].pow(2).sum()) for k in keys)
    assert l2_distance(a, aligned, keys) ** 2 == pytest.approx(norms - 2 * result.objective[-1], rel=1e-9)
    assert l2_distance(a, aligned, keys) < l2_distance(a, b, keys)


def test_weight_matching_equals_brute_force_on_a_three_unit_layer():
    spec = mlp_permutation_spec(1)
    for seed in range(5):
        a, b = mlp_state(widths=(3,), seed=seed), mlp_state(widths=(3,), seed=seed + 100)
        best = max(matching_objective(spec, {"P0": torch.tensor(p)}, a, b) for p in itertools.permutations(range(3)))
        found = weight_matching(spec, a, b)
        assert matching_objective(spec, found.perm, a, b) == pytest.approx(best, rel=1e-12)


def test_singular_values_unchanged_and_vectors_moved_by_permutation():
    a = mlp_state(widths=(8, 8, 8))
    spec = mlp_permutation_spec(3)
    b = apply_permutation(spec, random_permutation(spec, a, seed=4), a)
    w_a, w_b = a["hidden.1.weight"], b["hidden.1.weight"]
    torch.testing.assert_close(torch.linalg.svdvals(w_b), torch.linalg.svdvals(w_a), rtol=1e-12, atol=1e-12)
    assert singular_vector_alignment(w_a, w_a).min() == pytest.approx(1.0)
    assert singular_vector_alignment(w_a, w_b, k=3).mean() < 0.9
    # hand case: diag(3, 1) vs its row swap [[0, 1], [3, 0]]: u_1 moves from e1 to e2, v_1 stays e1
    m = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(singular_vector_alignment(m, m[[1, 0]]), torch.zeros(2, dtype=torch.float64))


def test_loss_barrier_hand_computed():
    assert loss_barrier([1.0, 3.0, 2.0], [0.0, 0.5, 1.0]) == pytest.approx(1.5)
    assert loss_barrier([1.0, 1.25, 1.5, 1.75, 2.0], [0.0, 0.25, 0.5, 0.75, 1.0]) == pytest.approx(0.0)
    assert loss_barrier([2.0, 1.0, 0.5], [0.0, 0.5, 1.0]) == pytest.approx(0.0)  # t=0, t=1 give 0
    with pytest.raises(ConfigError):
        loss_barrier([1.0, 2.0], [0.1, 1.0])


def test_interpolate_and_merge_aligned():
    a, b = mlp_state(seed=0), mlp_state(seed=1)
    assert all(torch.equal(interpolate(a, b, 0.0)[k], a[k]) for k in a)
    mid = interpolate(a, b, 0.5)
    torch.testing.assert_close(mid["head.weight"], (a["head.weight"] + b["head.weight"]) / 2)
    c = mlp_state(seed=2)
    three = merge_aligned([a, b, c])
    torch.testing.assert_close(
        three["hidden.0.bias"], (a["hidden.0.bias"] + b["hidden.0.bias"] + c["hidden.0.bias"]) / 3
    )


def test_straight_through_recovers_permutation_of_a_copy():
    a = mlp_state(widths=(6, 6), dtype=torch.float32)
    spec = mlp_permutation_spec(2)
    b = apply_permutation(spec, random_permutation(spec, a, seed=1), a)
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))

    def loss(state, xb, yb):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(MLP(10, (6, 6), 3), state, (xb,)), yb)

    result = straight_through_matching(spec, a, b, loss, [(x, y)] * 3, lr=1e-2)
    aligned = apply_permutation(spec, result.perm, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    assert len(result.objective) == 3


# --- PLeaS -------------------------------------------------------------------------------------------------------
def test_width_accounting():
    assert merged_width(10, 10) == 10 and merged_width(10, 0) == 20 and merged_width(10, 4) == 16
    assert [num_merged_for_width(8, r) for r in (1.0, 1.25, 1.5, 2.0)] == [8, 6, 4, 0]
    with pytest.raises(ConfigError):
        num_merged_for_width(8, 2.5)
    a, b = mlp_state(widths=(8, 8), classes=3), mlp_state(widths=(8, 8), classes=4, seed=1)
    x = torch.randn(200, 10, dtype=torch.float64)
    merged = pleas_merge(a, b, x, [5, 2])
    assert merged.widths == [11, 14]
    assert merged.backbone["hidden.0.weight"].shape == (11, 10)
    assert merged.backbone["hidden.1.weight"].shape == (14, 11)
    assert merged.heads[0]["head.weight"].shape == (3, 14) and merged.heads[1]["head.weight"].shape == (4, 14)
    assert merged.parameters() == (11 * 10 + 11) + (14 * 11 + 14) + (3 * 14 + 3) + (4 * 14 + 4)
    for match in merged.matches:
        units_a = torch.sort(torch.cat([match.merged_a, match.only_a])).values
        units_b = torch.sort(torch.cat([match.merged_b, match.only_b])).values
        assert torch.equal(units_a, torch.arange(8)) and torch.equal(units_b, torch.arange(8))
    # A-only units never read B-only inputs (the reference's gradient mask)
    w = merged.backbone["hidden.1.weight"]  # rows: 2 merged, 6 A-only, 6 B-only; cols: 5 merged, 3 A, 3 B
    assert torch.count_nonzero(w[2:8, 8:11]) == 0 and torch.count_nonzero(w[8:14, 5:8]) == 0
    assert torch.count_nonzero(merged.heads[0]["head.weight"][:, 8:14]) == 0


def test_full_budget_reproduces_both_models_exactly():
    a, b = mlp_state(widths=(8, 8), classes=3, seed=0), mlp_state(widths=(8, 8), classes=5, seed=1)
    x = torch.randn(300, 10, dtype=torch.float64)
    merged = check_no_mutation(pleas_merge, a=a, b=b, x=x, num_merged=0, ridge=0.0)
    assert merged.widths == [16, 16]
    torch.testing.assert_close(run_mlp({**merged.backbone, **merged.heads[0]}, x), run_mlp(a, x), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(run_mlp({**merged.backbone, **merged.heads[1]}, x), run_mlp(b, x), rtol=1e-8, atol=1e-8)
    zipped = zip_merge(a, b, match_layers(a, b, x, 0))  # concatenation without data: exact on any input
    x_new = torch.randn(20, 10, dtype=torch.float64)
    torch.testing.assert_close(run_mlp({**zipped.backbone, **zipped.heads[1]}, x_new), run_mlp(b, x_new))


def test_masked_least_squares_equals_naive_lstsq():
    torch.manual_seed(0)
    x, y = torch.randn(50, 6, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    blocks = [
        (torch.tensor([0, 2]), torch.arange(6)),
        (torch.tensor([1]), torch.tensor([0, 3])),
        (torch.tensor([3]), torch.tensor([5])),
    ]
    weight, bias = masked_least_squares(x, y, blocks)
    design_all = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1)
    for rows, cols in blocks:  # naive: one lstsq per output row over its allowed columns plus a bias column
        for row in rows.tolist():
            mask = torch.zeros(7, dtype=torch.bool)
            mask[cols] = True
            mask[-1] = True
            solution = torch.linalg.lstsq(design_all[:, mask], y[:, row : row + 1]).solution[:, 0]
            torch.testing.assert_close(weight[row, cols], solution[:-1])
            torch.testing.assert_close(bias[row], solution[-1])
            assert torch.count_nonzero(weight[row, ~mask[:-1]]) == 0
    # ridge: the closed form (X^T X + lambda D) w = X^T y, D = diag(mean diag, ..., 0 for the bias)
    weight_r, bias_r = masked_least_squares(x, y, [(torch.arange(4), torch.arange(6))], ridge=0.1)
    gram = design_all.T @ design_all
    penalty = torch.diag(torch.cat([torch.full((6,), 0.1 * float(gram.diagonal()[:6].mean())), torch.zeros(1)]))
    closed = torch.linalg.inv(gram + penalty) @ design_all.T @ y
    torch.testing.assert_close(weight_r, closed[:-1].T)
    torch.testing.assert_close(bias_r, closed[-1])


def test_partial_match_finds_a_hidden_permutation_and_merges_the_best_pairs():
    torch.manual_seed(0)
    features_a = torch.randn(400, 6)
    truth = torch.tensor([3, 0, 5, 1, 4, 2])  # B's unit truth[i] carries A's unit i
    features_b = torch.empty_like(features_a)
    noise = torch.tensor([0.0, 0.1, 2.0, 0.3, 0.05, 5.0])  # pairs 2 and 5 are poorly correlated
    features_b[:, truth] = features_a + noise * torch.randn(400, 6)
    corr = activation_correlation(features_a, features_b)
    match = partial_match(corr, 4)
    assert torch.equal(truth[match.merged_a], match.merged_b)
    assert set(match.only_a.tolist()) == {2, 5} and set(match.only_b.tolist()) == {truth[2].item(), truth[5].item()}
    assert (match.correlation[:-1] >= match.correlation[1:]).all()  # most correlated first
    torch.testing.assert_close(
        corr[0, 3], torch.corrcoef(torch.stack([features_a[:, 0], features_b[:, 3]]))[0, 1].double()
    )


def test_zip_merge_identity_matches_is_weight_averaging():
    a, b = mlp_state(widths=(8, 8), classes=3), mlp_state(widths=(8, 8), classes=3, seed=1)
    merged = zip_merge(a, b, identity_matches([8, 8]))
    for key in ("hidden.0.weight", "hidden.1.bias", "hidden.1.weight"):
        torch.testing.assert_close(merged.backbone[key], (a[key] + b[key]) / 2)
    assert torch.equal(merged.heads[0]["head.weight"], a["head.weight"])


def test_permutation_merge_of_a_permuted_copy_is_the_model():
    a = mlp_state(widths=(8, 8), classes=3)
    spec = mlp_permutation_spec(2)
    b = apply_permutation(spec, random_permutation(spec, a, seed=7), a)
    x = torch.randn(300, 10, dtype=torch.float64)
    matches = match_layers(a, b, x, 8)  # identical features up to order: every correlation 1
    merged = zip_merge(a, b, matches)
    torch.testing.assert_close(run_mlp({**merged.backbone, **merged.heads[0]}, x), run_mlp(a, x))
    torch.testing.assert_close(run_mlp({**merged.backbone, **merged.heads[1]}, x), run_mlp(a, x))
    fitted = pleas_merge(a, b, x, matches=matches, ridge=0.0)
    torch.testing.assert_close(run_mlp({**fitted.backbone, **fitted.heads[0]}, x), run_mlp(a, x), rtol=1e-7, atol=1e-7)


def test_pleas_least_squares_fits_at_least_as_well_as_the_data_free_merge():
    a, b = mlp_state(widths=(8, 8), classes=3, seed=0), mlp_state(widths=(8, 8), classes=3, seed=1)
    x = torch.randn(400, 10, dtype=torch.float64)
    matches = match_layers(a, b, x, 6)
    _, logits_a = mlp_activations(a, x)
    fitted = pleas_merge(a, b, x, matches=matches, ridge=0.0)
    zipped = zip_merge(a, b, matches)
    # the first layer's least squares is the best fit of the layout targets, so its residual is the smaller
    pre_a, _ = mlp_activations(a, x)
    pre_b, _ = mlp_activations(b, x)
    m = matches[0]
    target = torch.cat(
        [(pre_a[0][:, m.merged_a] + pre_b[0][:, m.merged_b]) / 2, pre_a[0][:, m.only_a], pre_b[0][:, m.only_b]], 1
    )

    def residual(state):
        return float((x @ state["hidden.0.weight"].T + state["hidden.0.bias"] - target).pow(2).sum())

    assert residual(fitted.backbone) <= residual(zipped.backbone) + 1e-9
    error = lambda merged: float((run_mlp({**merged.backbone, **merged.heads[0]}, x) - logits_a).pow(2).mean())  # noqa: E731
    assert error(fitted) < error(zipped)


def test_pleas_errors():
    a, b = mlp_state(widths=(8, 8)), mlp_state(widths=(6, 6), seed=1)
    x = torch.randn(50, 10, dtype=torch.float64)
    with pytest.raises(ConfigError, match="exactly one"):
        pleas_merge(a, a, x, 2, width_ratio=1.5)
    with pytest.raises(ConfigError, match="hidden widths differ"):
        pleas_merge(a, b, x, 2)
    with pytest.raises(ConfigError, match="inputs"):
        pleas_merge(a, a, x, 2, inputs="other")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_merged"):
        partial_match(torch.eye(3, dtype=torch.float64), 4)
    assert isinstance(identity_matches([2])[0], LayerMatch)
