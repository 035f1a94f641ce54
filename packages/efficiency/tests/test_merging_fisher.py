"""Fisher merging (arXiv:2111.09832): the diagonal Fisher estimate and the Fisher-weighted merge."""

import math

import pytest
import torch
from torch import nn

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.fisher import diagonal_fisher, fisher_merge, fisher_merge_iter


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    last = nn.Linear(5, 3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), last)
    with torch.no_grad():  # sharper logits so classes differ in probability
        last.weight.mul_(3.0)
    return model


def naive_fisher(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One backward per (example, label): labels [N, S] sampled, or None for the exact sum over classes."""
    params = dict(model.named_parameters())
    totals = {n: torch.zeros_like(p) for n, p in params.items()}
    with torch.no_grad():
        probs = torch.softmax(model(inputs), dim=-1)  # [N, C]
    for i in range(inputs.shape[0]):
        pairs = (
            [(int(y), 1.0 / labels.shape[1]) for y in labels[i]]
            if labels is not None
            else [(c, float(probs[i, c])) for c in range(probs.shape[1])]
        )
        for y, weight in pairs:
            model.zero_grad()
            torch.log_softmax(model(inputs[i : i + 1]), dim=-1)[0, y].backward()
            for n, p in params.items():
                assert p.grad is not None
                totals[n] += weight * p.grad.detach() ** 2
    return {n: t / inputs.shape[0] for n, t in totals.items()}


def test_sampled_fisher_equals_a_naive_per_example_loop_on_the_same_labels() -> None:
    model, x = small_model(), torch.randn(7, 4, generator=torch.Generator().manual_seed(1))
    fisher = diagonal_fisher(model, x, samples=3, batch_size=7, seed=5)
    with torch.no_grad():  # the same draws: one chunk, the same generator call
        probs = torch.softmax(model(x), dim=-1)
    labels = torch.multinomial(probs, 3, replacement=True, generator=torch.Generator().manual_seed(5))
    reference = naive_fisher(model, x, labels)
    assert fisher.keys() == reference.keys()
    for n in reference:
        torch.testing.assert_close(fisher[n], reference[n], rtol=1e-5, atol=1e-7)


def test_exact_fisher_equals_the_naive_loop_and_does_not_depend_on_chunking() -> None:
    model, x = small_model(), torch.randn(7, 4, generator=torch.Generator().manual_seed(2))
    reference = naive_fisher(model, x, None)
    for batch_size in (3, 7):
        fisher = diagonal_fisher(model, x, labels="exact", batch_size=batch_size)
        for n in reference:
            torch.testing.assert_close(fisher[n], reference[n], rtol=1e-5, atol=1e-7)


def test_sampled_labels_estimate_the_exact_expectation() -> None:
    model, x = small_model(), torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    exact = diagonal_fisher(model, x, labels="exact")
    sampled = diagonal_fisher(model, x, samples=2000, batch_size=1000, seed=0)
    for n in exact:
        # relative error of the whole tensor: a Monte Carlo mean over 12,000 draws
        err = float((sampled[n] - exact[n]).norm() / exact[n].norm())
        assert err < 0.05, (n, err)


def test_fisher_of_named_parameters_only_and_true_labels_are_not_used() -> None:
    model, x = small_model(), torch.randn(5, 4)
    fisher = check_no_mutation(
        lambda model, inputs: diagonal_fisher(model, inputs, names=["0.weight", "0.bias"]), model=model, inputs=x
    )
    assert set(fisher) == {"0.weight", "0.bias"}
    full = diagonal_fisher(model, x)
    torch.testing.assert_close(fisher["0.weight"], full["0.weight"])
    assert model.training  # restored
    assert all(bool((f >= 0).all()) for f in full.values())


def test_fisher_estimation_errors_name_the_bad_value() -> None:
    model, x = small_model(), torch.randn(2, 4)
    with pytest.raises(ConfigError, match="'nope'"):
        diagonal_fisher(model, x, names=["nope"])
    with pytest.raises(ConfigError, match="labels='true'"):
        diagonal_fisher(model, x, labels="true")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="samples=0"):
        diagonal_fisher(model, x, samples=0)


def test_equal_fishers_give_plain_averaging() -> None:
    g = torch.Generator().manual_seed(0)
    models = [{"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)} for _ in range(3)]
    shared = {"w": torch.rand(3, 4, generator=g) + 0.1, "b": torch.rand(4, generator=g) + 0.1}
    for normalize in (True, False):
        merged = fisher_merge(models, [shared] * 3, normalize=normalize)
        for n in ("w", "b"):
            torch.testing.assert_close(merged[n], sum(m[n] for m in models) / 3)
    # a constant (isotropic) Fisher of any scale is plain averaging too
    iso = [{n: torch.full_like(t, s) for n, t in models[0].items()} for s in (1.0, 1.0, 1.0)]
    torch.testing.assert_close(fisher_merge(models, iso)["w"], sum(m["w"] for m in models) / 3)


def test_hand_computed_two_model_merge() -> None:
    m1, m2 = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, -2.0])}
    f1, f2 = {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([3.0, 1.0])}
    eps = 1e-6
    plain = fisher_merge([m1, m2], [f1, f2], normalize=False)["w"]
    # entry 0: (1*1 + 3*3) / (1 + 3); entry 1: F1 = 0 is floored to eps
    expected = torch.tensor([10.0 / 4.0, (eps * 2.0 + 1.0 * -2.0) / (eps + 1.0)])
    torch.testing.assert_close(plain, expected)
    weighted = fisher_merge([m1, m2], [f1, f2], weights=[2.0, 1.0], normalize=False)["w"]
    torch.testing.assert_close(weighted[0], torch.tensor((2 * 1 * 1 + 3 * 3) / (2 * 1 + 3.0)))
    # normalized: lambda_i / ||F_i|| with ||F1|| = 1, ||F2|| = sqrt(10)
    a, b = 1.0, 1.0 / math.sqrt(10.0)
    normalized = fisher_merge([m1, m2], [f1, f2])["w"]
    torch.testing.assert_close(normalized[0], torch.tensor((a * 1 * 1 + b * 3 * 3) / (a * 1 + b * 3)))
    torch.testing.assert_close(normalized[1], torch.tensor((a * eps * 2 + b * 1 * -2) / (a * eps + b * 1)))


def test_heads_buffers_and_excluded_names_are_copied_from_the_first_model_without_mutation() -> None:
    g = torch.Generator().manual_seed(1)
    models = [
        {
            "backbone.w": torch.randn(2, 3, generator=g),
            "backbone.skip": torch.randn(3, generator=g),
            "head.w": torch.randn(3, generator=g),
            "steps": torch.tensor(i),
        }
        for i in range(2)
    ]
    fishers = [{"backbone.w": torch.rand(2, 3, generator=g), "backbone.skip": torch.rand(3, generator=g)}] * 2
    merged = check_no_mutation(
        lambda models, fishers: fisher_merge(models, fishers, exclude=["*.skip"]), models=models, fishers=fishers
    )
    assert torch.equal(merged["head.w"], models[0]["head.w"])
    assert torch.equal(merged["backbone.skip"], models[0]["backbone.skip"])
    assert int(merged["steps"]) == 0
    torch.testing.assert_close(merged["backbone.w"], (models[0]["backbone.w"] + models[1]["backbone.w"]) / 2)
    assert [n for n, _ in fisher_merge_iter(models, fishers)] == list(models[0])


def test_half_precision_inputs_merge_in_float32_and_keep_their_dtype() -> None:
    m = [{"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}, {"w": torch.tensor([3.0, 4.0], dtype=torch.bfloat16)}]
    f = [{"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([1.0, 3.0])}]
    out = fisher_merge(m, f, normalize=False)["w"]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.tensor([2.0, 3.5]))


def test_merge_errors_name_the_bad_value() -> None:
    m = [{"w": torch.ones(2)}, {"w": torch.ones(2)}]
    f = {"w": torch.ones(2)}
    with pytest.raises(ConfigError, match="1 Fishers given for 2 models"):
        fisher_merge(m, [f])
    with pytest.raises(ConfigError, match="shape"):
        fisher_merge(m, [f, {"w": torch.ones(3)}])
    with pytest.raises(ConfigError, match="all zero"):
        fisher_merge(m, [f, {"w": torch.zeros(2)}])
    with pytest.raises(ConfigError, match="weights"):
        fisher_merge(m, [f, f], weights=[-1.0, 1.0])
    with pytest.raises(ConfigError, match="shape"):
        fisher_merge([m[0], {"w": torch.ones(3)}], [f, f])
