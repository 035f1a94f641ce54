"""MIGA's routing, inner-group attention and baselines (paperzoo.timeseries.miga.model)."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.miga.model import MIGA, InnerGroupAttention, PlainMoE, build_model, top_k_weights


def test_global_top_k_weights_match_a_hand_computation():
    logits = torch.tensor([[1.0, 3.0, 0.0, 2.0]])
    weights = top_k_weights(logits, top_k=2)
    # keep 3.0 and 2.0 (experts 1 and 3): softmax over them = e^3 / (e^3 + e^2), e^2 / (e^3 + e^2)
    high = math.exp(3) / (math.exp(3) + math.exp(2))
    expected = torch.tensor([[0.0, high, 0.0, 1 - high]])
    torch.testing.assert_close(weights, expected)


def test_grouped_top_k_keeps_k_per_group_and_normalises_over_all_kept():
    # groups {0,1,2} and {3,4,5}; top-1 per group keeps expert 1 (logit 5) and expert 3 (logit 0), although the
    # global top-2 would be experts 1 and 2 (logits 5 and 4)
    logits = torch.tensor([[1.0, 5.0, 4.0, 0.0, -1.0, -2.0]])
    weights = top_k_weights(logits, top_k=1, num_groups=2)
    e5, e0 = math.exp(5), math.exp(0)
    expected = torch.tensor([[0.0, e5 / (e5 + e0), 0.0, e0 / (e5 + e0), 0.0, 0.0]])
    torch.testing.assert_close(weights, expected)
    global_weights = top_k_weights(logits, top_k=2, num_groups=1)
    assert global_weights[0, 2] > 0 and global_weights[0, 3] == 0


def test_top_k_weights_rows_sum_to_one_with_g_times_k_nonzeros():
    logits = torch.randn(7, 5, 12)
    weights = top_k_weights(logits, top_k=2, num_groups=3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(7, 5))
    assert ((weights > 0).sum(-1) == 6).all()
    assert ((weights.unflatten(-1, (3, 4)) > 0).sum(-1) == 2).all()  # two in every group
    # the kept experts are the per-group largest logits
    kept = weights.unflatten(-1, (3, 4)) > 0
    grouped = logits.unflatten(-1, (3, 4))
    assert (
        grouped.masked_fill(~kept, float("inf")).amin(-1) >= grouped.masked_fill(kept, -float("inf")).amax(-1)
    ).all()


def test_top_k_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="top_k"):
        top_k_weights(torch.randn(2, 6), top_k=4, num_groups=2)
    with pytest.raises(ConfigError, match="equal groups"):
        top_k_weights(torch.randn(2, 6), top_k=1, num_groups=4)


def test_inner_group_attention_mixes_only_within_a_group():
    torch.manual_seed(0)
    attention = InnerGroupAttention(dim=8, num_groups=3, num_heads=2).eval()
    h = torch.randn(5, 12, 8)  # 3 groups of 4 experts
    perturbed = h.clone()
    perturbed[:, 1] += 10 * torch.randn(5, 8)  # expert 1 of group 0
    out, out_perturbed = attention(h), attention(perturbed)
    torch.testing.assert_close(out[:, 4:], out_perturbed[:, 4:])  # groups 1 and 2 untouched
    assert (out[:, [0, 2, 3]] - out_perturbed[:, [0, 2, 3]]).abs().amax() > 1e-3  # its group mates do change


def test_miga_group_b_representations_ignore_an_expert_of_group_a():
    torch.manual_seed(0)
    model = MIGA(num_features=5, hidden=8, num_groups=2, experts_per_group=3, top_k=1, num_heads=2).eval()
    x = torch.randn(4, 6, 5)
    with torch.no_grad():
        before = model.forward_details(x)["representations"]
        model.experts.w2[0] += 1.0  # change expert 0 (group A)
        after = model.forward_details(x)["representations"]
    torch.testing.assert_close(before[..., 3:, :], after[..., 3:, :])  # group B
    assert (before[..., 1:3, :] - after[..., 1:3, :]).abs().amax() > 1e-3  # group A's other experts see it


def test_plain_moe_experts_do_not_interact():
    torch.manual_seed(0)
    model = PlainMoE(num_features=5, hidden=8, num_experts=6, top_k=2).eval()
    x = torch.randn(4, 6, 5)
    with torch.no_grad():
        before = model.forward_details(x)
        model.experts.w2[0] += 1.0
        after = model.forward_details(x)
    torch.testing.assert_close(before["representations"][..., 1:, :], after["representations"][..., 1:, :])
    torch.testing.assert_close(before["expert_outputs"][..., 1:], after["expert_outputs"][..., 1:])


def test_prediction_is_the_router_weighted_sum_of_expert_outputs():
    torch.manual_seed(0)
    model = MIGA(num_features=5, hidden=8, num_groups=2, experts_per_group=3, top_k=2).eval()
    details = model.forward_details(torch.randn(3, 4, 5))
    torch.testing.assert_close(details["prediction"], (details["weights"] * details["expert_outputs"]).sum(-1))
    torch.testing.assert_close(details["weights"], top_k_weights(details["logits"], 2, 2))


def test_variants_have_comparable_sizes_and_shapes():
    counts = {}
    for variant in ("miga", "miga_no_attention", "moe", "single"):
        model = build_model(variant, num_features=14, hidden=32, num_groups=2, experts_per_group=4, top_k=2)
        assert model(torch.randn(2, 20, 14)).shape == (2, 20)
        counts[variant] = sum(p.numel() for p in model.parameters())
    assert max(counts.values()) / min(counts.values()) < 1.35, counts
    assert not any(isinstance(m, InnerGroupAttention) for m in build_model("miga_no_attention", 14).modules())


def test_gradients_reach_router_experts_and_attention():
    torch.manual_seed(0)
    model = MIGA(num_features=5, hidden=8, num_groups=2, experts_per_group=2, top_k=1)
    model(torch.randn(3, 4, 5)).pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.router.weight.grad.abs().sum() > 0
