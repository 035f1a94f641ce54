"""The merge procedure: hand-computed TIES, a naive per-element reference, task arithmetic, dtypes, errors."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.procedure import merge, merge_iter, method_names, method_parameters
from paperzoo.efficiency.merging.sparsify import generator_for, random_drop


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201 - a generator fixture
    """Small tensors: one intra-op thread (two spinning threads on the shared 2-core machine were ~500x slower).

    Set here rather than with paperzoo.core.checks.torch_threads, whose import (Lightning) takes ~15 s.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _offset(base: dict[str, torch.Tensor], deltas: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    return {name: base[name] + torch.tensor(deltas[name]) for name in base}


def test_ties_hand_computed_three_models() -> None:
    # Task vectors and trim at density 0.6 (top 3 of 5 magnitudes):
    #   d1 = [ 3, -1,  0.5, -4, 2  ] -> [ 3, 0,  0, -4, 2  ]
    #   d2 = [-2,  5, -0.1, -1, 1.5] -> [-2, 5,  0,  0, 1.5]
    #   d3 = [ 1,  2, -3,  0.2, 4  ] -> [ 0, 2, -3,  0, 4  ]
    # elected sign = sgn([1, 7, -3, -4, 7.5]) = [+, +, -, -, +]
    # disjoint mean = [3, (5+2)/2, -3, -4, (2+1.5+4)/3] = [3, 3.5, -3, -4, 2.5]
    base = {"w": torch.ones(5)}
    models = [
        _offset(base, {"w": [3, -1, 0.5, -4, 2]}),
        _offset(base, {"w": [-2, 5, -0.1, -1, 1.5]}),
        _offset(base, {"w": [1, 2, -3, 0.2, 4]}),
    ]
    merged = torch.tensor([3, 3.5, -3, -4, 2.5])
    for scope in ("global", "tensor"):
        out = merge(base, models, "ties", density=0.6, scope=scope)
        torch.testing.assert_close(out["w"], 1 + merged)
    out = merge(base, models, "ties", density=0.6, lambda_=0.5)
    torch.testing.assert_close(out["w"], 1 + 0.5 * merged)
    # zero where no model agrees: the sum of +1 and -1 is 0, so the elected sign is 0
    two = [_offset(base, {"w": [1, 0, 0, 0, 0]}), _offset(base, {"w": [-1, 0, 0, 0, 0]})]
    torch.testing.assert_close(merge(base, two, "ties", density=1.0)["w"], torch.ones(5))


def _naive_ties(base, models, density, scope, lam):  # noqa: ANN001, ANN202 - reference written as plain loops
    names = list(base)
    densities = density if isinstance(density, list) else [density] * len(models)
    deltas = [{n: (m[n].float() - base[n].float()).reshape(-1).tolist() for n in names} for m in models]

    def threshold(values: list[float], density: float) -> float:
        k = round(density * len(values))
        return sorted((abs(v) for v in values), reverse=True)[k - 1] if k else float("inf")

    kept = []
    for d, rho in zip(deltas, densities, strict=True):
        if scope == "global":
            t = threshold([v for n in names for v in d[n]], rho)
            kept.append({n: [v if abs(v) >= t else 0.0 for v in d[n]] for n in names})
        else:
            kept.append({n: [v if abs(v) >= threshold(d[n], rho) else 0.0 for v in d[n]] for n in names})
    out = {}
    for n in names:
        values = []
        for j in range(len(kept[0][n])):
            column = [k[n][j] for k in kept]
            total = sum(column)
            sign = (total > 0) - (total < 0)
            agree = [v for v in column if v != 0 and ((v > 0) - (v < 0)) == sign]
            values.append(base[n].reshape(-1)[j].item() + lam * (sum(agree) / len(agree) if agree and sign else 0.0))
        out[n] = torch.tensor(values).reshape(base[n].shape)
    return out


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_ties_matches_naive_loop(scope: str) -> None:
    g = torch.Generator().manual_seed(1)
    base = {"a": torch.randn(4, 6, generator=g), "b": torch.randn(7, generator=g), "c": torch.randn(3, 3, generator=g)}
    models = [{n: t + torch.randn(t.shape, generator=g) * s for n, t in base.items()} for s in (0.5, 1.0, 2.0)]
    out = merge(base, models, "ties", density=0.3, scope=scope, lambda_=0.7)
    expected = _naive_ties(base, models, 0.3, scope, 0.7)
    for name in base:
        torch.testing.assert_close(out[name], expected[name])


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_ties_per_model_density_matches_naive_loop(scope: str) -> None:
    g = torch.Generator().manual_seed(5)
    base = {"a": torch.randn(5, 6, generator=g), "b": torch.randn(9, generator=g)}
    models = [{n: t + torch.randn(t.shape, generator=g) for n, t in base.items()} for _ in range(3)]
    densities = [0.1, 0.5, 0.9]
    out = merge(base, models, "ties", scope=scope, model_params=[{"density": d} for d in densities])
    expected = _naive_ties(base, models, densities, scope, 1.0)
    for name in base:
        torch.testing.assert_close(out[name], expected[name])
    # an empty override keeps the global value
    partial = merge(
        base, models, "ties", density=0.5, scope=scope, model_params=[{"density": 0.1}, {}, {"density": 0.9}]
    )
    for name in base:
        torch.testing.assert_close(partial[name], expected[name])


def test_dare_per_model_drop_rate() -> None:
    g = torch.Generator().manual_seed(6)
    base = {"w": torch.randn(40, generator=g)}
    deltas = [torch.randn(40, generator=g) for _ in range(2)]
    models = [{"w": base["w"] + d} for d in deltas]
    out = merge(
        base,
        models,
        "dare_task_arithmetic",
        seed=3,
        model_params=[{"drop_rate": 0.0}, {"drop_rate": 0.5, "rescale": False}],
    )
    # model 0 is kept whole, model 1 dropped at 0.5 with its own (seed, model, tensor) mask and no rescale
    expected = base["w"] + deltas[0] + random_drop(deltas[1], 0.5, generator_for(3, 1, "w"), rescale=False)
    torch.testing.assert_close(out["w"], expected)


def test_merge_iter_streams_what_merge_returns() -> None:
    g = torch.Generator().manual_seed(7)
    base = {"b": torch.randn(3, generator=g), "a": torch.randn(2, 2, generator=g), "ids": torch.arange(3)}
    models = [
        {n: t + 1 if not t.is_floating_point() else t + torch.randn(t.shape, generator=g) for n, t in base.items()}
        for _ in range(2)
    ]
    for method in method_names():
        items = list(merge_iter(base, models, method, seed=1))
        assert [name for name, _ in items] == list(base)  # the base's order, one item per tensor
        whole = merge(base, models, method, seed=1)
        for name, tensor in items:
            assert torch.equal(tensor, whole[name])
    # arguments are validated when merge_iter is called, before any item is requested
    with pytest.raises(ConfigError, match="density=2.0"):
        merge_iter(base, models, "ties", density=2.0)
    with pytest.raises(ConfigError, match=r"model_params\[1\]: density=0.0"):
        merge_iter(base, models, "ties", model_params=[{}, {"density": 0.0}])


def test_global_and_tensor_thresholds_differ() -> None:
    # One model, density 0.5 over 4 entries: globally keep 10 and 9 (all of "a"); per tensor keep 10 of "a", 2 of "b".
    base = {"a": torch.zeros(2), "b": torch.zeros(2)}
    models = [{"a": torch.tensor([10.0, 9.0]), "b": torch.tensor([1.0, 2.0])}]
    glob = merge(base, models, "ties", density=0.5, scope="global")
    tensor = merge(base, models, "ties", density=0.5, scope="tensor")
    torch.testing.assert_close(glob["a"], torch.tensor([10.0, 9.0]))
    torch.testing.assert_close(glob["b"], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(tensor["a"], torch.tensor([10.0, 0.0]))
    torch.testing.assert_close(tensor["b"], torch.tensor([0.0, 2.0]))
    # an excluded tensor does not count towards the global threshold: "b" alone keeps its larger entry
    excluded = merge(base, models, "ties", density=0.5, scope="global", exclude=["a"])
    torch.testing.assert_close(excluded["b"], torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(excluded["a"], torch.zeros(2))


def test_average_and_task_arithmetic() -> None:
    base = {"w": torch.tensor([1.0, 2.0])}
    models = [{"w": torch.tensor([3.0, 2.0])}, {"w": torch.tensor([1.0, 6.0])}]
    torch.testing.assert_close(merge(base, models, "average")["w"], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(merge(base, models, "average", weights=[3, 1])["w"], torch.tensor([2.5, 3.0]))
    # base + 0.5 * (1 * [2, 0] + 2 * [0, 4]) = [2, 6]
    out = merge(base, models, "task_arithmetic", weights=[1, 2], lambda_=0.5)
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 6.0]))
    # negative weights negate a task in task arithmetic
    torch.testing.assert_close(merge(base, models[:1], "task_arithmetic", weights=[-1])["w"], torch.tensor([-1.0, 2.0]))
    # DARE with no drop is the method it feeds
    torch.testing.assert_close(
        merge(base, models, "dare_task_arithmetic", drop_rate=0.0, lambda_=0.5, weights=[1, 2])["w"],
        torch.tensor([2.0, 6.0]),
    )
    g = torch.Generator().manual_seed(0)
    big = {"w": torch.randn(50, generator=g)}
    many = [{"w": big["w"] + torch.randn(50, generator=g)} for _ in range(3)]
    torch.testing.assert_close(
        merge(big, many, "dare_ties", drop_rate=0.0)["w"], merge(big, many, "ties", density=1.0)["w"]
    )


@pytest.mark.parametrize("method", ["average", "task_arithmetic", "ties", "dare_task_arithmetic", "dare_ties"])
def test_no_mutation_and_excluded_keys(method: str) -> None:
    g = torch.Generator().manual_seed(2)
    base = {
        "encoder.w": torch.randn(5, 4, generator=g),
        "classifier.weight": torch.randn(3, 4, generator=g),
        "classifier.bias": torch.randn(3, generator=g),
        "position_ids": torch.arange(6),
    }
    models = [
        {n: (t + torch.randn(t.shape, generator=g) if t.is_floating_point() else t + 1) for n, t in base.items()}
        for _ in range(2)
    ]
    out = check_no_mutation(merge, base=base, models=models, method=method, exclude=["classifier.*"])
    assert list(out) == list(base)
    for name in ("classifier.weight", "classifier.bias", "position_ids"):
        assert torch.equal(out[name], base[name])
        assert out[name].data_ptr() != base[name].data_ptr()
    assert not torch.equal(out["encoder.w"], base["encoder.w"])


def test_strided_and_half_precision_inputs() -> None:
    g = torch.Generator().manual_seed(3)
    base32 = torch.randn(6, 8, generator=g)
    deltas = [torch.randn(6, 8, generator=g) for _ in range(3)]
    reference = merge({"w": base32}, [{"w": base32 + d} for d in deltas], "ties", density=0.5)["w"]
    base = {"w": base32.to(torch.float16)}
    models = [
        {"w": (base32 + deltas[0]).to(torch.bfloat16)},
        {"w": (base32 + deltas[1]).t().contiguous().t()},  # float32, strided (column-major)
        {"w": torch.stack([base32 + deltas[2]] * 2, dim=-1)[..., 1]},  # float32, every other element
    ]
    assert not models[1]["w"].is_contiguous() and not models[2]["w"].is_contiguous()
    out = merge(base, models, "ties", density=0.5)
    assert out["w"].dtype == torch.float16
    torch.testing.assert_close(out["w"].float(), reference, atol=0.05, rtol=0.02)
    for method in method_names():
        assert merge(base, models, method)["w"].dtype == torch.float16


def test_errors_name_the_value() -> None:
    base = {"w": torch.zeros(2), "b": torch.zeros(1)}
    model = {"w": torch.ones(2), "b": torch.ones(1)}
    with pytest.raises(ConfigError, match=r"'tie'.*average, task_arithmetic, ties, dare_task_arithmetic, dare_ties"):
        merge(base, [model], "tie")
    with pytest.raises(ConfigError, match=r"'densty'.*density, scope, lambda_"):
        merge(base, [model], "ties", densty=0.5)
    with pytest.raises(ConfigError, match=r"'lambda_'.*'average'; valid parameters: none"):
        merge(base, [model], "average", lambda_=2)
    with pytest.raises(ConfigError, match="'b'"):
        merge(base, [{"w": torch.ones(2)}], "average")
    with pytest.raises(ConfigError, match="'extra'"):
        merge(base, [{**model, "extra": torch.ones(1)}], "average")
    with pytest.raises(ConfigError, match=r"'w' has shape \(3,\)"):
        merge(base, [{"w": torch.ones(3), "b": torch.ones(1)}], "ties")
    with pytest.raises(ConfigError, match="density=0.0"):
        merge(base, [model], "ties", density=0.0)
    with pytest.raises(ConfigError, match="drop_rate=1.0"):
        merge(base, [model], "dare_ties", drop_rate=1.0)
    with pytest.raises(ConfigError, match="scope='layer'"):
        merge(base, [model], "ties", scope="layer")
    with pytest.raises(ConfigError, match="2 weights given for 1 models"):
        merge(base, [model], "task_arithmetic", weights=[1, 2])
    with pytest.raises(ConfigError, match="must all be > 0"):
        merge(base, [model], "ties", weights=[-1])
    with pytest.raises(ConfigError, match="No models"):
        merge(base, [], "average")
    assert method_parameters("ties") == {"density": 0.2, "scope": "global", "lambda_": 1.0}
    assert method_parameters("dare_ties") == {"drop_rate": 0.9, "rescale": True, "lambda_": 1.0}
    with pytest.raises(ConfigError, match="'nope'"):
        method_parameters("nope")


def test_model_params_errors_name_the_model_and_parameter() -> None:
    base = {"w": torch.zeros(2)}
    models = [{"w": torch.ones(2)}, {"w": -torch.ones(2)}]
    with pytest.raises(ConfigError, match=r"model_params\[1\]: drop_rate=1.5 is out of range"):
        merge(base, models, "dare_ties", model_params=[{"drop_rate": 0.1}, {"drop_rate": 1.5}])
    with pytest.raises(ConfigError, match=r"model_params\[0\]: parameter 'lambda_'.*whole merge.*: density"):
        merge(base, models, "ties", model_params=[{"lambda_": 2.0}, {}])
    with pytest.raises(ConfigError, match=r"model_params\[1\]: unknown parameter 'densty'"):
        merge(base, models, "ties", model_params=[{}, {"densty": 0.5}])
    with pytest.raises(ConfigError, match=r"model_params\[0\]: parameter 'lambda_'.*per-model parameters: none"):
        merge(base, models, "task_arithmetic", model_params=[{"lambda_": 2.0}, {}])
    with pytest.raises(ConfigError, match="model_params has 1 entries for 2 models"):
        merge(base, models, "ties", model_params=[{}])
    with pytest.raises(ConfigError, match=r"model_params\[1\]=0.5 is not a mapping"):
        merge(base, models, "ties", model_params=[{}, 0.5])
    with pytest.raises(ConfigError, match=r"model_params\[0\]: rescale='yes'"):
        merge(base, models, "dare_ties", model_params=[{"rescale": "yes"}, {}])
