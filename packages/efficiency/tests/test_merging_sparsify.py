"""Sparsifiers and consensus: DARE's drop rate, rescale and expectation; seeding; top-k thresholds; sign election."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.merging.consensus import disjoint_mean, elect_sign
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.sparsify import (
    generator_for,
    global_threshold,
    global_thresholds,
    magnitude_mask,
    magnitude_threshold,
    order_statistics,
    random_drop,
)


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201 - a generator fixture
    """Small tensors: one intra-op thread (two spinning threads on the shared 2-core machine were ~500x slower).

    Set here rather than with paperzoo.core.checks.torch_threads, whose import (Lightning) takes ~15 s.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_dare_drop_rate_and_rescale() -> None:
    delta = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    for p in (0.1, 0.5, 0.9):
        dropped = random_drop(delta, p, generator_for(0, 0, "w"))
        kept = dropped != 0
        rate = 1 - kept.float().mean().item()
        sigma = (p * (1 - p) / delta.numel()) ** 0.5
        assert abs(rate - p) < 5 * sigma, f"drop rate {rate} for p={p}"
        torch.testing.assert_close(dropped[kept], delta[kept] / (1 - p))
        plain = random_drop(delta, p, generator_for(0, 0, "w"), rescale=False)
        assert torch.equal(plain != 0, kept)
        torch.testing.assert_close(plain[kept], delta[kept])
    assert torch.equal(random_drop(delta, 0.0, generator_for(0, 0, "w")), delta)


def test_dare_expectation_is_the_delta() -> None:
    base = {"w": torch.zeros(64)}
    delta = torch.linspace(-2, 2, 64)
    models = [{"w": delta}]
    runs = torch.stack([merge(base, models, "dare_task_arithmetic", drop_rate=0.5, seed=s)["w"] for s in range(800)])
    # per entry the mean of 800 draws has standard deviation |d| * sqrt(p / (1 - p) / 800) = |d| / 28
    assert (runs.mean(0) - delta).abs().max() < 5 * delta.abs().max() / 28
    assert (runs.mean(0) - delta).abs().mean() < delta.abs().mean() / 10
    # the mean over entries and seeds is much closer than one draw
    assert (runs[0] - delta).abs().mean() > 5 * (runs.mean(0) - delta).abs().mean()


def test_dare_seeded_per_model_and_tensor_not_by_order() -> None:
    g = torch.Generator().manual_seed(4)
    base = {n: torch.randn(30, generator=g) for n in ("a", "b", "c")}
    models = [{n: t + torch.randn(30, generator=g) for n, t in base.items()} for _ in range(2)]
    out = merge(base, models, "dare_ties", drop_rate=0.5, seed=7)
    reordered_base = {n: base[n] for n in ("c", "a", "b")}
    reordered_models = [{n: m[n] for n in ("b", "c", "a")} for m in models]
    again = merge(reordered_base, reordered_models, "dare_ties", drop_rate=0.5, seed=7)
    for name in base:
        assert torch.equal(out[name], again[name])
    other = merge(base, models, "dare_ties", drop_rate=0.5, seed=8)
    assert not torch.equal(out["a"], other["a"])
    # two models with the same delta get different masks
    same = torch.ones(1000)
    masks = [random_drop(same, 0.5, generator_for(0, i, "a")) != 0 for i in (0, 1)]
    assert not torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], random_drop(same, 0.5, generator_for(0, 0, "b")) != 0)


def test_magnitude_thresholds() -> None:
    values = torch.tensor([0.5, -3.0, 2.0, -1.0, 4.0])
    assert magnitude_threshold(values.abs(), 0.4) == 3.0  # keep 2 of 5
    assert torch.equal(magnitude_mask(values, 0.4), torch.tensor([False, True, False, False, True]))
    assert magnitude_mask(values, 1.0).all()
    assert not magnitude_mask(values, 0.05).any()  # round(0.25) = 0 kept
    # ties with the k-th magnitude are kept
    assert magnitude_mask(torch.tensor([1.0, -1.0, 0.5]), 1 / 3).sum() == 2
    # the global threshold is one over all of a model's tensors, fed one at a time
    parts = [torch.tensor([10.0, -9.0]), torch.tensor([1.0, 2.0])]
    assert global_threshold(parts, 0.5) == 9.0
    assert global_threshold(lambda: iter(parts), 0.5) == 9.0
    assert global_threshold([], 0.5) == float("inf")
    with pytest.raises(ConfigError, match="can be read only once"):
        global_threshold(iter(parts), 0.5)


def _tricky_tensors() -> list[torch.Tensor]:
    """Values with many ties, zeros of both signs, denormals, infinities, and fp16/bf16 parts."""
    g = torch.Generator().manual_seed(11)
    tiny = torch.finfo(torch.float32).tiny
    return [
        torch.randn(3000, generator=g),
        torch.randint(-3, 4, (40, 25), generator=g).float() * 0.5,  # ties and zeros
        torch.tensor([0.0, -0.0, tiny / 4, -tiny / 8, tiny / 4, 1e-45, -1e-45, float("inf"), -float("inf")]),
        (torch.randn(500, generator=g) * 1e-3).to(torch.float16),
        torch.randn(64, 8, generator=g).to(torch.bfloat16).t(),  # strided
        torch.full((700,), 0.25),  # one value repeated: one bucket holds them all
    ]


def test_order_statistics_equal_kthvalue_on_the_concatenation() -> None:
    parts = _tricky_tensors()
    flat = torch.cat([p.float().reshape(-1) for p in parts])
    n = flat.numel()
    ranks = [0, 1, 2, n // 3, n // 2, n - 701, n - 700, n - 2, n - 1] + list(range(3000, 3020))
    magnitude_ranks = [0, 5, n // 4, n - 1]
    out = order_statistics(lambda: ((p, p.abs()) for p in parts), [lambda m: ranks, lambda m: magnitude_ranks])
    for values, chosen, source in ((out[0], ranks, flat), (out[1], magnitude_ranks, flat.abs())):
        expected = [torch.kthvalue(source, r + 1).values.item() for r in chosen]
        assert values == expected  # exactly, bit for bit up to the sign of zero
    # every rank of a small tensor with denormals and both zeros
    small = parts[2]
    (every,) = order_statistics(lambda: [(small,)], [lambda m: range(m)])
    assert every == torch.sort(small).values.tolist()
    # empty stream and no ranks; a rank out of range names itself
    assert order_statistics(lambda: iter([]), [lambda m: []]) == [[]]
    with pytest.raises(ConfigError, match="Rank 9 is out of range for 9 values"):
        order_statistics(lambda: [(small,)], [lambda m: [m]])


@pytest.mark.parametrize("density", [0.0, 1e-4, 0.01, 0.2, 0.5, 0.999, 1.0])
def test_global_threshold_equals_the_concatenated_kthvalue(density: float) -> None:
    parts = _tricky_tensors()
    magnitudes = torch.cat([p.float().abs().reshape(-1) for p in parts])
    assert global_threshold(parts, density) == magnitude_threshold(magnitudes, density)
    # a single tensor, and fp16 / bf16 task vectors
    assert global_threshold(parts[:1], density) == magnitude_threshold(parts[0].abs(), density)
    for dtype in (torch.float16, torch.bfloat16):
        low = [parts[0].to(dtype), parts[1].to(dtype)]
        concatenated = torch.cat([p.float().abs().reshape(-1) for p in low])
        assert global_threshold(low, density) == magnitude_threshold(concatenated, density)


def test_global_thresholds_of_several_models_at_once() -> None:
    g = torch.Generator().manual_seed(12)
    models = [[torch.randn(30, generator=g) * s, torch.randn(4, 5, generator=g)] for s in (0.1, 1.0, 3.0)]
    densities = [0.05, 0.3, 0.9]
    steps = [torch.stack([m[t] for m in models]) for t in range(2)]  # per tensor: (K, *shape)
    together = global_thresholds(lambda: iter(steps), densities)
    assert together == [global_threshold(m, d) for m, d in zip(models, densities, strict=True)]
    assert global_thresholds(lambda: iter(steps), [0.01, 1.0, 0.5])[0] == float("inf")


def test_global_threshold_k_zero_and_k_n() -> None:
    parts = [torch.tensor([3.0, -1.0]), torch.tensor([0.0, 2.0, -5.0])]
    assert global_threshold(parts, 0.05) == float("inf")  # round(0.25) = 0 kept
    assert global_threshold(parts, 1.0) == 0.0  # all 5 kept: the smallest magnitude
    assert global_threshold(parts, 0.2) == 5.0  # 1 kept
    assert global_threshold(parts, 0.4) == 3.0


def test_elect_sign_and_disjoint_mean() -> None:
    deltas = torch.tensor([[1.0, -2.0, 0.0, 3.0], [-3.0, -1.0, 0.0, 0.0], [1.0, 4.0, 0.0, 0.0]])  # (K=3, 4)
    ones = torch.ones(3)
    sign = elect_sign(deltas, ones)
    assert torch.equal(sign, torch.tensor([-1.0, 1.0, 0.0, 1.0]))  # sums -1, 1, 0, 3
    torch.testing.assert_close(disjoint_mean(deltas, ones, sign), torch.tensor([-3.0, 4.0, 0.0, 3.0]))
    # weights: sum 2*1 - 3 + 1 = 0 -> sign 0 -> 0; column 1: 2*(-2) - 1 + 4 = -1 -> mean of (-2 w2, -1 w1) = -5/3
    w = torch.tensor([2.0, 1.0, 1.0])
    sign = elect_sign(deltas, w)
    assert torch.equal(sign, torch.tensor([0.0, -1.0, 0.0, 1.0]))
    torch.testing.assert_close(disjoint_mean(deltas, w, sign), torch.tensor([0.0, -5.0 / 3.0, 0.0, 3.0]))
