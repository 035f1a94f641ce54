"""TSMixer (arXiv 2306.09364) math: gated attention, the axis each mixer mixes, channel independence, both
reconciliation heads, masking and the masked loss, pretrain -> fine-tune transfer, odd shapes."""

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.tsmixer.model import (
    CrossChannelReconciliationHead,
    GatedAttention,
    HierarchyReconciliationHead,
    MixerBlock,
    TSMixer,
    TSMixerOutput,
    TSMixerPretrainer,
    aggregate,
    hierarchy_loss,
    load_backbone,
    masked_patch_loss,
    patch_input,
    random_patch_mask,
)

B, L, H, C = 3, 32, 12, 4


def randomise(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Weights large enough that every path visibly changes outputs (default init makes some nearly constant)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module.eval()


def test_gated_attention_matches_hand_computation():
    gate = GatedAttention(2)
    with torch.no_grad():
        gate.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        gate.proj.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[1.0, 2.0]])
    # logits = [1, 2*2 + 1] = [1, 5]; softmax = [e^1, e^5] / (e^1 + e^5)
    e1, e5 = torch.tensor(1.0).exp(), torch.tensor(5.0).exp()
    expected = torch.tensor([[1.0 * e1 / (e1 + e5), 2.0 * e5 / (e1 + e5)]])
    torch.testing.assert_close(gate(x), expected)


def test_gated_attention_along_an_inner_axis_equals_moving_the_axis_last():
    torch.manual_seed(0)
    gate = GatedAttention(5, dim=2)
    x = torch.randn(2, 3, 5, 7)
    reference = x.movedim(2, -1) * torch.softmax(gate.proj(x.movedim(2, -1)), dim=-1)
    torch.testing.assert_close(gate(x), reference.movedim(-1, 2))


@pytest.mark.parametrize(("dim", "size"), [(1, 4), (2, 6), (3, 8)])
def test_each_mixer_mixes_exactly_its_axis(dim, size):
    """Perturb one element x[0, c=1, n=2, d=3] of [B, C, N, D]: the outputs that change are exactly those along the
    mixed axis (dim 1 = channel mixer, 2 = inter-patch, 3 = intra-patch/hidden features). The block's norm is
    over D, so every D position of an affected (c, n) may change too; nothing else may."""
    block = randomise(MixerBlock(size, dim, d_model=8, dropout=0.0))
    x = torch.randn(2, 4, 6, 8)
    x2 = x.clone()
    x2[0, 1, 2, 3] += 1.0
    changed = (block(x2) - block(x)).abs() > 1e-7  # [B, C, N, D]
    allowed = torch.zeros_like(changed)
    if dim == 1:
        allowed[0, :, 2, :] = True  # every channel at patch 2
    elif dim == 2:
        allowed[0, 1, :, :] = True  # every patch of channel 1
    else:
        allowed[0, 1, 2, :] = True  # the features of that one patch
    assert not (changed & ~allowed).any()
    assert changed[allowed].all()  # and the mixing reaches every index of the mixed axis


def test_common_channel_forecasts_are_channel_independent_and_mix_channel_is_not():
    past = torch.randn(B, L, C)
    perturbed = past.clone()
    perturbed[:, :, 2] += torch.randn(B, L)
    independent = randomise(TSMixer(C, L, H, patch_length=8, patch_stride=4, mode="common_channel"))
    diff = (independent(perturbed) - independent(past)).abs().amax(dim=(0, 1))  # [C]
    assert diff[2] > 1e-3
    assert torch.all(diff[[0, 1, 3]] == 0)
    mixing = randomise(TSMixer(C, L, H, patch_length=8, patch_stride=4, mode="mix_channel"))
    diff = (mixing(perturbed) - mixing(past)).abs().amax(dim=(0, 1))
    assert torch.all(diff[[0, 1, 3]] > 1e-4)
    hybrid = randomise(TSMixer(C, L, H, patch_length=8, patch_stride=4, mode="hybrid"))
    diff = (hybrid(perturbed) - hybrid(past)).abs().amax(dim=(0, 1))
    assert torch.all(diff[[0, 1, 3]] > 1e-4)  # the cross-channel head mixes channels on top of the CI backbone


def test_cross_channel_head_uses_all_channels_within_the_context_window_only():
    head = randomise(CrossChannelReconciliationHead(num_channels=3, context=1))
    forecast = torch.randn(2, 10, 3)
    y = head(forecast)
    bumped = forecast.clone()
    bumped[:, 5, 0] += 1.0
    changed = ((head(bumped) - y).abs() > 1e-7).any(dim=0)  # [H, C]
    assert changed[4:7].all()  # steps 4, 5, 6 of every channel see step 5 of channel 0
    assert not changed[:4].any() and not changed[7:].any()


def test_cross_channel_windows_are_zero_padded_neighbourhoods():
    head = CrossChannelReconciliationHead(num_channels=2, context=1)
    forecast = torch.arange(8.0).reshape(1, 4, 2)  # step t, channel c -> 2t + c
    windows = head.windows(forecast)  # [1, 4, 2 * 3], channel-major
    assert windows[0, 0].tolist() == [0.0, 0.0, 2.0, 0.0, 1.0, 3.0]  # ch0: (pad, 0, 2); ch1: (pad, 1, 3)
    assert windows[0, 3].tolist() == [4.0, 6.0, 0.0, 5.0, 7.0, 0.0]


def test_hierarchy_aggregation_matches_hand_computation_with_a_short_last_window():
    series = torch.arange(7.0).reshape(1, 7, 1)  # 0..6, windows of 3: [0,1,2], [3,4,5], [6]
    assert aggregate(series, 3, "sum").flatten().tolist() == [3.0, 12.0, 6.0]
    assert aggregate(series, 3, "mean").flatten().tolist() == [1.0, 4.0, 6.0]


def test_hierarchy_head_reconciles_base_and_aggregates_through_one_linear_layer():
    head = randomise(HierarchyReconciliationHead(num_patches=3, d_model=4, prediction_length=5, aggregation_length=2))
    h = torch.randn(2, 3, 3, 4)
    reconciled, coarse = head(h)
    assert coarse.shape == (2, 3, 3)  # ceil(5 / 2) aggregates
    flat = h.flatten(-2)
    base = flat @ head.base.linear.weight.T + head.base.linear.bias
    expected_coarse = flat @ head.aggregate.linear.weight.T + head.aggregate.linear.bias
    expected = torch.cat([base, expected_coarse], -1) @ head.reconcile.weight.T + head.reconcile.bias
    torch.testing.assert_close(coarse, expected_coarse)
    torch.testing.assert_close(reconciled, expected)


def test_hierarchy_loss_terms_and_aggregates_in_input_units():
    model = randomise(TSMixer(C, L, H, patch_length=8, hierarchy_head=True, aggregation_length=5))
    past = torch.randn(B, L, C) * 4 + 10
    output = model.predict(past)
    assert output.aggregate.shape == (B, 3, C)
    future = torch.randn(B, H, C)
    expected = (
        F.mse_loss(output.forecast, future)
        + F.mse_loss(output.aggregate, aggregate(future, 5))
        + 0.5 * F.mse_loss(aggregate(output.forecast, 5), output.aggregate)
    )
    torch.testing.assert_close(hierarchy_loss(output, future, 5, "mean", 0.5), expected)
    # "sum" aggregates are the window means times the window lengths (5, 5, 2)
    summed = randomise(
        TSMixer(C, L, H, patch_length=8, hierarchy_head=True, aggregation_length=5, hierarchy_aggregation="sum")
    )
    torch.testing.assert_close(
        summed.predict(past).aggregate, output.aggregate * torch.tensor([5.0, 5.0, 2.0])[:, None]
    )
    with pytest.raises(ConfigError):
        hierarchy_loss(TSMixerOutput(output.forecast, None), future, 5)


def test_random_mask_has_the_exact_ratio_and_channel_consistency():
    torch.manual_seed(0)
    mask = random_patch_mask(64, 3, 10, 0.4, channel_consistent=True)
    assert mask.shape == (64, 3, 10)
    assert torch.all(mask.sum(-1) == 10 - int(10 * 0.6))
    assert torch.equal(mask[:, 0], mask[:, 2])
    free = random_patch_mask(64, 3, 10, 0.4, channel_consistent=False)
    assert torch.all(free.sum(-1) == 4) and not torch.equal(free[:, 0], free[:, 2])
    assert mask[:, 0].float().mean(0).min() > 0.15  # every position gets masked sometimes (uniform over patches)


def test_masked_loss_counts_only_masked_patches():
    target = torch.zeros(1, 1, 3, 2)
    reconstruction = torch.tensor([[[[1.0, 1.0], [2.0, 2.0], [100.0, -100.0]]]])
    mask = torch.tensor([[[True, True, False]]])
    assert masked_patch_loss(reconstruction, target, mask).item() == pytest.approx((1.0 + 4.0) / 2)


def test_pretrainer_masks_inputs_and_scores_only_masked_patches():
    model = randomise(TSMixerPretrainer(C, L, patch_length=8, patch_stride=8, mask_ratio=0.5))
    past = torch.randn(B, L, C)
    mask = torch.zeros(B, C, 4, dtype=torch.bool)
    mask[:, :, 1] = True
    out = model(past, mask=mask)
    # changing a masked patch's input values does not change anything (the model never sees them) ...
    past2 = past.clone()
    past2[:, 8:16] = past2[:, 8:16] * 0 + 1.23  # patch 1 of every channel; RevIN stats change, so compare raw
    model.revin = None
    a, b = model(past, mask=mask), model(past2, mask=mask)
    torch.testing.assert_close(a["reconstruction"], b["reconstruction"])
    # ... and the loss is the reconstruction error of patch 1 alone
    expected = (a["reconstruction"][:, :, 1] - a["target"][:, :, 1]).pow(2).mean()
    torch.testing.assert_close(a["loss"], expected)
    assert out["loss"].ndim == 0


def test_pretrained_backbone_transfers_to_the_forecaster():
    pretrainer = randomise(TSMixerPretrainer(C, L, patch_length=8, d_model=8, num_layers=2))
    forecaster = TSMixer(C, L, H, patch_length=8, d_model=8, num_layers=2).eval()
    load_backbone(forecaster, pretrainer)
    for key, value in pretrainer.backbone.state_dict().items():
        torch.testing.assert_close(forecaster.backbone.state_dict()[key], value)
    patches = patch_input(torch.randn(B, L, C), 8, 8)
    torch.testing.assert_close(forecaster.backbone(patches), pretrainer.backbone(patches))
    with pytest.raises(ConfigError, match="shape"):
        load_backbone(TSMixer(C, L, H, patch_length=8, d_model=16, num_layers=2), pretrainer)


@pytest.mark.parametrize("mode", ["common_channel", "mix_channel", "hybrid"])
def test_odd_lengths_shapes_and_backward(mode):
    model = TSMixer(3, 29, 7, patch_length=5, patch_stride=3, mode=mode, hierarchy_head=True, aggregation_length=4)
    past = torch.randn(2, 29, 3, requires_grad=True)
    output = model.predict(past)
    assert output.forecast.shape == (2, 7, 3) and output.aggregate.shape == (2, 2, 3)
    hierarchy_loss(output, torch.randn(2, 7, 3), 4).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_patching_keeps_the_newest_steps():
    x = torch.arange(11.0).reshape(1, 11, 1)
    patches = patch_input(x, 4, 3)  # (11 - 4) // 3 + 1 = 3 patches; the oldest step is dropped
    assert patches[0, 0].tolist() == [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="mode"):
        TSMixer(2, 16, 4, mode="mixed")
    with pytest.raises(ConfigError, match="context_length"):
        TSMixer(2, 4, 4, patch_length=8)
    with pytest.raises(ConfigError, match="expects past"):
        TSMixer(2, 16, 4)(torch.randn(1, 15, 2))
