"""Twin-Merging: SVD compression, exclusive parts, the per-sample batched merge against a naive per-sample loop, the
router, and the storage accounting (hand counts)."""

import copy

import pytest
import torch
from torch import nn

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.twin_merging import (
    ExclusivePart,
    TwinMerging,
    exclusive_part,
    exclusive_parts,
    shared_expert,
    storage_bytes,
    svd_factors,
    train_router,
    twin_state,
)


class TinyNet(nn.Module):
    """A conv stem, Linear-ReLU layers and a LayerNorm under `backbone.*`, like the testbed's VisionNet."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 3, 3, stride=2, padding=1),  # [N, 3, 4, 4]
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(48, 10),
            nn.ReLU(),
            nn.Linear(10, 6),
            nn.LayerNorm(6),
        )
        self.head = nn.Linear(6, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def backbone_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if k.startswith("backbone.")}


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in state.items()}


def features_with(net: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    model = copy.deepcopy(net)
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        return model.features(x)


@pytest.fixture(scope="module")
def setup() -> dict:
    torch.manual_seed(0)
    net = TinyNet()
    base = backbone_state(net)
    experts = [perturbed(base, seed) for seed in (1, 2, 3)]
    heads = [nn.Linear(6, c) for c in (3, 4, 2)]
    shared = shared_expert(base, experts, "task_arithmetic", lambda_=0.4)
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    return {"net": net, "base": base, "experts": experts, "heads": heads, "shared": shared, "x": x}


def test_svd_factors_full_rank_reconstructs_and_truncation_is_eckart_young() -> None:
    m = torch.randn(9, 5, generator=torch.Generator().manual_seed(0))
    a, b = svd_factors(m)
    assert a.shape == (9, 5) and b.shape == (5, 5)
    torch.testing.assert_close(a @ b.T, m, atol=1e-5, rtol=1e-5)
    s = torch.linalg.svdvals(m)
    a2, b2 = svd_factors(m, 2)
    assert a2.shape == (9, 2) and b2.shape == (5, 2)
    # the best rank-2 approximation's error is the norm of the dropped singular values
    assert float(torch.linalg.norm(m - a2 @ b2.T)) == pytest.approx(float(s[2:].norm()), rel=1e-5)
    assert svd_factors(m, 0.5)[0].shape == (9, 2)  # int(0.5 * 5) = 2, the reference's rule
    assert svd_factors(m, 0.01)[0].shape == (9, 1)  # at least one
    assert svd_factors(m, 99)[0].shape == (9, 5)  # clipped to the full rank
    with pytest.raises(ConfigError):
        svd_factors(m, 0)
    with pytest.raises(ConfigError):
        svd_factors(m, 1.5)
    with pytest.raises(ConfigError):
        svd_factors(torch.zeros(3), 1)


def test_exclusive_part_compresses_matrices_and_keeps_the_rest_dense(setup: dict) -> None:
    shared, expert = setup["shared"], setup["experts"][0]
    part = check_no_mutation(exclusive_part, shared=shared, expert=expert, rank=None)
    assert set(part.factors) == {"backbone.3.weight", "backbone.5.weight"}
    assert set(part.dense) == {"backbone.0.weight", "backbone.0.bias", "backbone.3.bias", "backbone.5.bias",
                               "backbone.6.weight", "backbone.6.bias"}  # fmt: skip
    for name in shared:
        torch.testing.assert_close(part.tensor(name), expert[name] - shared[name], atol=1e-5, rtol=1e-5)
    low = exclusive_part(shared, expert, rank=1)
    assert low.factors["backbone.3.weight"][0].shape == (10, 1)


def test_one_hot_routing_at_full_rank_is_the_expert(setup: dict) -> None:
    net, shared, experts, heads, x = setup["net"], setup["shared"], setup["experts"], setup["heads"], setup["x"]
    parts = exclusive_parts(shared, experts, rank=None)
    twin = TwinMerging(net, shared, parts, heads)
    for t, expert in enumerate(experts):
        onehot = torch.nn.functional.one_hot(torch.full((x.shape[0],), t), 3).float()
        torch.testing.assert_close(twin.features(x, onehot), features_with(net, expert, x), atol=1e-5, rtol=1e-5)
        state = twin_state(shared, parts, onehot[0])
        for name in shared:
            torch.testing.assert_close(state[name], expert[name], atol=1e-5, rtol=1e-5)
        predicted = twin.predict(x, torch.full((x.shape[0],), t), onehot)
        assert torch.equal(predicted, heads[t](features_with(net, expert, x)).argmax(-1))


@pytest.mark.parametrize("rank", [None, 2])
def test_batched_per_sample_merge_equals_a_naive_per_sample_loop(setup: dict, rank: int | None) -> None:
    net, shared, experts, heads, x = setup["net"], setup["shared"], setup["experts"], setup["heads"], setup["x"]
    parts = exclusive_parts(shared, experts, rank=rank)
    twin = TwinMerging(net, shared, parts, heads)
    weights = torch.softmax(torch.randn(x.shape[0], 3, generator=torch.Generator().manual_seed(4)), -1)
    head_tasks = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    batched = twin.features(x, weights)
    predicted = twin.predict(x, head_tasks, weights)
    for i in range(x.shape[0]):
        naive = features_with(net, twin_state(shared, parts, weights[i]), x[i : i + 1])  # explicit theta(x_i)
        torch.testing.assert_close(batched[i : i + 1], naive, atol=1e-5, rtol=1e-5)
        assert int(predicted[i]) == int(heads[int(head_tasks[i])](naive).argmax(-1))
    # per batch: every sample gets the batch's mean routing
    per_batch = twin.features(x, weights, per_batch=True)
    torch.testing.assert_close(
        per_batch, features_with(net, twin_state(shared, parts, weights.mean(0)), x), atol=1e-5, rtol=1e-5
    )
    # routing weights only act inside the call: the shared model is unchanged after it
    torch.testing.assert_close(twin.shared_features(x), features_with(net, shared, x))


def test_twin_merging_does_not_change_its_inputs(setup: dict) -> None:
    net, shared, experts, heads = setup["net"], setup["shared"], setup["experts"], setup["heads"]
    parts = exclusive_parts(shared, experts, rank=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    TwinMerging(net, shared, parts, heads)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    factors = [{k: (a.clone(), b.clone()) for k, (a, b) in p.factors.items()} for p in parts]
    check_no_mutation(lambda shared: twin_state(shared, parts, [0.2, 0.3, 0.5]), shared=shared)
    for part, saved in zip(parts, factors, strict=True):
        assert all(
            torch.equal(part.factors[k][0], a) and torch.equal(part.factors[k][1], b) for k, (a, b) in saved.items()
        )


def test_router_learns_the_task_of_separable_features_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    centers = 3.0 * torch.randn(3, 5, generator=g)
    ids = torch.arange(3).repeat_interleave(40)
    feats = centers[ids] + 0.5 * torch.randn(120, 5, generator=g) + 10.0  # an offset the standardization removes
    state = torch.random.get_rng_state()
    router = train_router(feats, ids, 3, hidden=16, steps=100, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    with torch.no_grad():
        assert float((router(feats).argmax(-1) == ids).float().mean()) == 1.0
    again = train_router(feats, ids, 3, hidden=16, steps=100, seed=1)
    assert all(
        torch.equal(a, b) for a, b in zip(router.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with pytest.raises(ConfigError):
        train_router(feats, ids, 2)


def test_route_is_softmax_of_router_on_shared_features(setup: dict) -> None:
    net, shared, experts, heads, x = setup["net"], setup["shared"], setup["experts"], setup["heads"], setup["x"]
    router = nn.Linear(6, 3)
    twin = TwinMerging(net, shared, exclusive_parts(shared, experts, 2), heads, router)
    expected = torch.softmax(router(features_with(net, shared, x)), -1)
    torch.testing.assert_close(twin.route(x), expected)
    torch.testing.assert_close(twin.features(x), twin.features(x, expected))
    # without head tasks the router's argmax task picks the head
    weights = twin.route(x)
    assert torch.equal(twin.predict(x), twin.predict(x, weights.argmax(-1), weights))


def test_shared_expert_is_the_engine_merge_and_only_ta_or_ties(setup: dict) -> None:
    base, experts = setup["base"], setup["experts"]
    ties = shared_expert(base, experts, "ties", density=0.5, lambda_=1.0)
    expected = merge(base, experts, "ties", density=0.5, lambda_=1.0)
    assert all(torch.equal(ties[k], expected[k]) for k in expected)
    with pytest.raises(ConfigError):
        shared_expert(base, experts, "average")


def test_storage_bytes_hand_count() -> None:
    shared = {"w": torch.zeros(8, 6), "b": torch.zeros(8)}
    experts = [{"w": torch.randn(8, 6), "b": torch.randn(8)} for _ in range(2)]
    parts = exclusive_parts(shared, experts, rank=2)
    router = nn.Linear(4, 2)
    got = storage_bytes(shared, parts, experts, router)
    per_task = (2 * (8 + 6) + 8) * 4  # factors A [8, 2] and B [6, 2], dense bias [8], float32
    assert got["exclusive"] == 2 * per_task
    assert got["shared"] == (48 + 8) * 4 and got["experts"] == 2 * (48 + 8) * 4
    assert got["router"] == (4 * 2 + 2) * 4
    assert got["total"] == got["shared"] + got["exclusive"] + got["router"]
    assert isinstance(parts[0], ExclusivePart) and parts[0].nbytes == per_task


def test_unsupported_routed_layer_is_refused() -> None:
    class WithEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 3)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.embed(x)

    net = WithEmbedding()
    shared = {"embed.weight": net.embed.weight.detach().clone()}
    part = exclusive_part(shared, {"embed.weight": shared["embed.weight"] + 1.0})
    with pytest.raises(ConfigError, match="embed"):
        TwinMerging(net, shared, [part], [nn.Identity()])


def test_check_scores_normalize_by_the_experts_on_the_same_samples() -> None:
    from paperzoo.efficiency.merging.checks.twin_merging import _scores

    y = torch.tensor([0, 1, 1, 0, 2, 2])
    tasks = torch.tensor([0, 0, 0, 1, 1, 1])
    predicted = torch.tensor([0, 1, 0, 0, 0, 2])  # task 0: 2/3, task 1: 2/3
    expert_correct = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # task 0: 1, task 1: 2/3
    got = _scores(predicted, y, tasks, expert_correct, ("a", "b"))
    assert got["mixed_accuracy"] == pytest.approx(4 / 6)
    assert got["normalized_mixed"] == pytest.approx((4 / 6) / (5 / 6))
    assert got["normalized_a"] == pytest.approx(2 / 3) and got["normalized_b"] == pytest.approx(1.0)
    assert got["normalized_per_task_mean"] == pytest.approx((2 / 3 + 1.0) / 2)


@pytest.mark.slow
def test_quick_claim_check_runs_and_reports_every_rank() -> None:
    from paperzoo.efficiency.merging.checks.twin_merging import QUICK_RANKS, check

    result = check(quick=True)
    assert len(result.criteria) == 2
    assert all(f"twin_rank_{r:g}" in result.baselines or f"{r:g}" == "0.1" for r in QUICK_RANKS)
    assert 0.0 <= result.method["mixed_accuracy"] <= 1.0
    assert result.method["bytes_exclusive"] > 0
