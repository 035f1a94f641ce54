"""Unconstrained merging: layer-wise merge vs global task arithmetic and a naive per-group reference, the grouping,
the coordinate search, vocabulary alignment, MinCE/AvgCE fusion on hand-made cases, the fusion loss against a naive
loop, and the distillation loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.core.lm.gpt import GPT
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.unconstrained import (
    Source,
    VocabularyMap,
    coordinate_search,
    distill_fused,
    fuse_distributions,
    fusion_loss,
    layerwise_merge,
    module_groups,
    sequence_cross_entropy,
    uniform_coefficients,
)


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201 - a generator fixture
    with torch_threads(1):
        yield


def _gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(20, dim=16, n_layers=2, n_heads=2, max_seq_len=8)


def _experts() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A base and two 'fine-tunes' (base + seeded noise), as plain (untied) tensor dicts."""
    base = {k: v.detach().clone() for k, v in _gpt(0).state_dict().items()}
    models = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        models.append({k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()})
    for model in models:  # keep the tie, as a fine-tuned GPT's state dict has it
        model["head.weight"] = model["embed.weight"].clone()
    return base, models


def test_module_groups_of_a_gpt() -> None:
    state = _gpt(0).state_dict()
    groups = module_groups(state)
    assert list(groups) == ["embed", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp", "norm"]
    assert groups["embed"] == ["embed.weight", "head.weight"]  # tied by storage
    assert groups["blocks.0.attn"] == [
        "blocks.0.attn_norm.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.out.weight",
    ]
    assert groups["blocks.1.mlp"][0] == "blocks.1.mlp_norm.weight"
    copied = {k: v.clone() for k, v in state.items()}  # a file round trip loses the shared storage
    assert "head" in module_groups(copied)
    assert module_groups(copied, tied=[("embed.weight", "head.weight")]) == groups
    assert "embed" not in module_groups(state, exclude=["embed.*", "head.*"])
    with pytest.raises(ConfigError, match="not in the state dict"):
        module_groups(state, tied=[("embed.weight", "nope")])


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_equal_coefficients_give_global_task_arithmetic(lam: float) -> None:
    base, models = _experts()
    groups = module_groups(base, tied=[("embed.weight", "head.weight")])
    out = check_no_mutation(
        layerwise_merge,
        base=base,
        models=models,
        coefficients=uniform_coefficients(groups, [lam, lam]),
        groups=groups,
    )
    expected = merge(base, models, "task_arithmetic", lambda_=lam)
    assert out.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(out[name], expected[name], rtol=0, atol=1e-6)


def test_layerwise_matches_naive_per_group_reference() -> None:
    base, models = _experts()
    groups = module_groups(base, tied=[("embed.weight", "head.weight")])
    coefficients = {g: [0.1 * (i + 1), -0.05 * i + 0.7] for i, g in enumerate(groups)}
    out = layerwise_merge(base, models, coefficients, groups)
    for group, names in groups.items():
        w1, w2 = coefficients[group]
        for name in names:
            naive = base[name] + w1 * (models[0][name] - base[name]) + w2 * (models[1][name] - base[name])
            torch.testing.assert_close(out[name], naive, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["embed.weight"], out["head.weight"], rtol=0, atol=0)  # still tied


def test_layerwise_ties_and_dare_equal_the_global_methods_at_equal_coefficients() -> None:
    base, models = _experts()
    groups = module_groups(base, tied=[("embed.weight", "head.weight")])
    ones = uniform_coefficients(groups, [1.0, 1.0])
    ties = layerwise_merge(base, models, ones, groups, "ties", density=0.3, scope="tensor")
    expected = merge(base, models, "ties", density=0.3, scope="tensor")
    dare = layerwise_merge(base, models, ones, groups, "dare_task_arithmetic", seed=3, drop_rate=0.5)
    expected_dare = merge(base, models, "dare_task_arithmetic", seed=3, drop_rate=0.5)
    for name in base:
        torch.testing.assert_close(ties[name], expected[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(dare[name], expected_dare[name], rtol=0, atol=1e-6)


def test_layerwise_errors() -> None:
    base, models = _experts()
    groups = module_groups(base, tied=[("embed.weight", "head.weight")])
    ones = uniform_coefficients(groups, [1.0, 1.0])
    with pytest.raises(ConfigError, match="scope='tensor'"):
        layerwise_merge(base, models, ones, groups, "ties")
    with pytest.raises(ConfigError, match="2 models"):
        layerwise_merge(base, models, uniform_coefficients(groups, [1.0]), groups)
    with pytest.raises(ConfigError, match="no coefficients"):
        layerwise_merge(base, models, {"embed": [1.0, 1.0]}, groups)
    with pytest.raises(ConfigError, match="lambda_"):
        layerwise_merge(base, models, ones, groups, lambda_=2.0)
    with pytest.raises(ConfigError, match="non-finite"):
        layerwise_merge(base, models, {**ones, "norm": [math.nan, 1.0]}, groups)


def test_coordinate_search_finds_the_grid_optimum_of_a_separable_objective() -> None:
    target = {"a": [0.5, 1.0], "b": [0.0, 1.5]}
    calls = []

    def objective(c: dict[str, list[float]]) -> float:
        calls.append(c)
        return -sum((v - t) ** 2 for g in target for v, t in zip(c[g], target[g], strict=True))

    grid = [0.0, 0.5, 1.0, 1.5]
    result = coordinate_search(objective, {"a": [1.0, 1.0], "b": [1.0, 1.0]}, grid, sweeps=3)
    assert result.coefficients == target
    assert result.score == 0.0
    assert result.evaluations == len(calls)
    # sweep 1 finds it (1 + 4 coordinates x 3 new values), sweep 2 improves nothing and stops
    assert result.evaluations == 1 + 2 * 4 * 3
    assert [s for _, s in result.history] == sorted(s for _, s in result.history)  # best-so-far never drops
    limited = coordinate_search(objective, {"a": [1.0, 1.0], "b": [1.0, 1.0]}, grid, budget=5)
    assert limited.evaluations == 5


def test_vocabulary_map_moves_probability_by_token_string() -> None:
    vocab = VocabularyMap(source_tokens=("1", "+", "x"), target_tokens=("+", "0", "1"))
    assert vocab.index.tolist() == [2, 0, -1]
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))  # "x" has no target token: its 0.2 is dropped
    probs = vocab.to_target_log_probs(logits).exp()
    torch.testing.assert_close(probs, torch.tensor([[0.3 / 0.8, 0.0, 0.5 / 0.8]]))
    same = VocabularyMap.identity(3).to_target_log_probs(logits).exp()
    torch.testing.assert_close(same, logits.exp())
    with pytest.raises(ConfigError, match="source vocabulary has 3"):
        vocab.to_target_log_probs(torch.zeros(1, 4))


def test_min_ce_picks_the_lowest_cross_entropy_expert_per_sequence() -> None:
    # Two sequences of two positions, vocabulary 3; gold tokens [0, 1] and [2, 2]; only position 1 of row 0 and
    # both positions of row 1 are scored.
    targets = torch.tensor([[0, 1], [2, 2]])
    mask = torch.tensor([[False, True], [True, True]])
    p1 = torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.8, 0.1]], [[0.3, 0.3, 0.4], [0.2, 0.2, 0.6]]])
    p2 = torch.tensor([[[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]], [[0.1, 0.1, 0.8], [0.1, 0.2, 0.7]]])
    # CE: row 0: e1 = -log 0.8, e2 = -log 0.3 -> e1; row 1: e1 = -(log 0.4 + log 0.6)/2, e2 = -(log 0.8 + log 0.7)/2
    ce = sequence_cross_entropy(
        torch.stack([p1.log(), p2.log()]).flatten(0, 1), targets.repeat(2, 1), mask.repeat(2, 1)
    )
    torch.testing.assert_close(
        ce,
        torch.tensor(
            [-math.log(0.8), -(math.log(0.4) + math.log(0.6)) / 2, -math.log(0.3), -(math.log(0.8) + math.log(0.7)) / 2]
        ),
    )
    fused, weights = fuse_distributions([p1.log(), p2.log()], targets, mask, "min_ce")
    assert weights.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    torch.testing.assert_close(fused[0], p1[0])
    torch.testing.assert_close(fused[1], p2[1])
    fused, weights = fuse_distributions([p1.log(), p2.log()], targets, mask, "avg_ce")
    w = torch.softmax(-ce.view(2, 2).T, dim=-1)  # [B, K]
    torch.testing.assert_close(weights, w)
    torch.testing.assert_close(fused, w[:, 0, None, None] * p1 + w[:, 1, None, None] * p2)
    with pytest.raises(ConfigError, match="fusion mode"):
        fuse_distributions([p1.log()], targets, mask, "max")  # type: ignore[arg-type]


def test_fusion_loss_equals_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g)
    fused = torch.softmax(torch.randn(3, 4, 5, generator=g), dim=-1)
    fused[0, 0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # zero entries contribute 0 * log 0 = 0
    targets = torch.randint(0, 5, (3, 4), generator=g)
    mask = torch.tensor([[True, True, False, False], [False, True, True, True], [True, False, False, True]])
    lm_weight = 0.7
    lm_terms, kl_terms = [], []
    for b in range(3):
        for t in range(4):
            if not mask[b, t]:
                continue
            q = torch.softmax(logits[b, t].double(), dim=0)
            lm_terms.append(-math.log(q[targets[b, t]]))
            kl_terms.append(
                sum(float(p) * (math.log(p) - math.log(q[v])) for v, p in enumerate(fused[b, t].double()) if p > 0)
            )
    naive = lm_weight * sum(lm_terms) / len(lm_terms) + (1 - lm_weight) * sum(kl_terms) / len(kl_terms)
    loss = fusion_loss(logits, fused, targets, mask, lm_weight)
    assert abs(float(loss) - naive) < 1e-5
    kl_only = fusion_loss(logits, fused, targets, mask, 0.0)
    manual = (fused * (fused.clamp(min=1e-30).log() - F.log_softmax(logits, -1))).sum(-1)
    assert abs(float(kl_only) - float(manual[mask].mean())) < 1e-5
    with pytest.raises(ConfigError, match="lm_weight"):
        fusion_loss(logits, fused, targets, mask, 1.5)


def test_distillation_pulls_the_student_towards_the_min_ce_teacher() -> None:
    # Teacher A always predicts token 1, teacher B token 2 with a different (3-token) vocabulary order; the data's
    # gold token is always 2, so MinCE picks B everywhere and the student learns to put its mass on 2.
    class Constant(torch.nn.Module):
        def __init__(self, token: int, vocab: int):
            super().__init__()
            self.token, self.vocab = token, vocab

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return 5.0 * F.one_hot(torch.full_like(tokens, self.token), self.vocab).float()

    target_tokens = ("a", "b", "c", "d")
    sources = [
        Source(Constant(1, 4), VocabularyMap(target_tokens, target_tokens)),
        Source(Constant(0, 3), VocabularyMap(("c", "a", "b"), target_tokens)),  # source id 0 is "c" = target 2
    ]
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Embedding(4, 8), torch.nn.Linear(8, 4))
    inputs = torch.randint(0, 4, (8, 5))
    targets = torch.full((8, 5), 2)
    mask = torch.ones(8, 5, dtype=torch.bool)
    chosen = []

    def batches():  # noqa: ANN202 - a generator
        while True:
            yield inputs, targets, mask

    distill_fused(student, sources, batches(), 60, lr=0.05, on_step=lambda s, loss, w: chosen.append(w))
    assert all(w[:, 1].eq(1).all() for w in chosen)
    with torch.no_grad():
        probs = torch.softmax(student(inputs), dim=-1)
    assert float(probs[..., 2].mean()) > 0.9


# --- the check's data and evaluation ----------------------------------------------------------------------------
def test_chain_format_and_splits() -> None:
    from paperzoo.efficiency.merging.checks import unconstrained as uc

    assert uc.chain(7, "*", 8, "+", 3) == "07*8+3=056+3=059\n"
    assert uc.chain(99, "+", 9, "+", 9) == "99+9+9=108+9=117\n"
    assert uc.chain(18, "-", 9, "-", 9) == "18-9-9=009-9=000\n"
    with pytest.raises(ValueError, match="fixed-width"):
        uc.chain(5, "-", 9, "-", 0)
    data = uc.splits(0)
    assert len(data["composed"]["val"]) == len(data["composed"]["test"]) == 650 and not data["composed"]["train"]
    for kind in ("add", "mul", "sub"):
        parts = data[kind]
        assert not set(parts["train"]) & (set(parts["val"]) | set(parts["test"]))
    assert all(p[2] == "*" and p[4] == "+" for p in data["composed"]["test"])
    trained = data["sub"]["train"] + data["add"]["train"] + data["mul"]["train"]
    assert not [p for p in trained if p[2] == "*" and p[4] == "+"]  # no training set holds a composed problem
    assert {p[2] + p[4] for p in data["add"]["train"]} == {"++", "+-", "-+"}
    assert {p[2] + p[4] for p in data["mul"]["train"]} == {"**", "*-", "-*"}
    assert all(p[2] + p[4] == "++" for p in data["add"]["test"] + data["add"]["val"])
    assert data == uc.splits(0)


def test_teacher_forced_exact_match_equals_greedy_decoding() -> None:
    from paperzoo.efficiency.merging.checks import unconstrained as uc

    torch.manual_seed(0)
    model = GPT(257, dim=16, n_layers=1, n_heads=2, max_seq_len=uc.LENGTH).eval()
    prompts = uc.encode(uc.problems("composed")[:8])[:, : uc.PROMPT]
    completion = uc.greedy_complete(model, prompts)  # [8, 10]
    rows = torch.cat([prompts, completion], dim=1)
    wrong = rows.clone()
    wrong[4:, uc.PROMPT + 2] = (wrong[4:, uc.PROMPT + 2] + 1) % 257  # a wrong byte in step 1 of rows 4..7
    wrong[6:, -2] = (wrong[6:, -2] + 1) % 257  # and one in step 2 of rows 6..7
    figures = uc.evaluate(model, wrong)
    assert figures["exact"] == 0.5  # rows 0..3 are the model's own greedy output
    assert figures["step1"] == 0.5 and figures["step2"] == 0.75
    assert uc.evaluate(model, rows)["exact"] == 1.0


@pytest.mark.slow
def test_quick_check_runs() -> None:
    from paperzoo.efficiency.merging.checks.unconstrained import check

    result = check(quick=True)
    assert [c.name for c in result.criteria] == [
        "layer-wise merge - best expert, composed exact match",
        "fused-distilled target - best expert, composed exact match",
    ]
    assert all(math.isfinite(c.measured) for c in result.criteria)
    for name in ("add_expert", "mul_expert", "narrow_mul_expert", "task_arithmetic", "ties", "multitask_sft"):
        assert 0.0 <= result.baselines[name]["composed_exact"] <= 1.0
    assert abs(sum(v for k, v in result.method.items() if k.startswith("min_ce_share_")) - 1.0) < 1e-6
