"""Tiny Time Mixers: adaptive patching, resolution prefix, channel independence, exogenous mixer, size."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.ttm.model import AdaptivePatchLevel, TinyTimeMixer, count_parameters, ttm_tiny


def test_default_config_is_under_one_million_parameters():
    model = TinyTimeMixer()  # the paper's 512-96 TTM
    assert count_parameters(model) < 1_000_000
    assert count_parameters(model) == 805_280  # TTM-Q's published size (~805k)
    assert count_parameters(TinyTimeMixer(resolution_prefix=True)) < 1_000_000


def test_patchify_keeps_the_last_patches_in_order():
    model = ttm_tiny(context_length=20, patch_length=8)  # 2 patches; the oldest 4 steps are dropped
    past = torch.arange(20.0).reshape(1, 20, 1)
    patches = model.patchify(past)  # [1, 1, 2, 8]
    assert patches.shape == (1, 1, 2, 8)
    assert patches[0, 0, 0].tolist() == list(range(4, 12))
    assert patches[0, 0, 1].tolist() == list(range(12, 20))


def test_adaptive_levels_use_factors_largest_first():
    model = ttm_tiny(adaptive_patching_levels=3, d_model=48)
    assert model.backbone.mixer.factors == [4, 2, 1]
    level = model.backbone.mixer.levels[0]
    # the layers of the first level see 4x as many patches with a quarter of the features
    patch_mixer = level.layers[0].patch_mixer
    assert patch_mixer.mlp.fc1.in_features == 4 * model.num_patches
    assert level.layers[0].feature_mixer.mlp.fc1.in_features == 12


def test_adaptive_level_splits_and_merges_patches_as_hand_computed():
    """Sub-patch j of patch n is token n * f + j with features [j D/f, (j+1) D/f)."""
    level = AdaptivePatchLevel(num_patches=3, d_model=12, factor=2, num_layers=1, expansion=2, dropout=0.0)
    seen = {}

    def record(module, inputs):
        seen["x"] = inputs[0]

    level.layers[0].register_forward_pre_hook(record)
    x = torch.arange(2 * 1 * 3 * 12, dtype=torch.float32).reshape(2, 1, 3, 12)
    out = level(x)
    split = seen["x"]
    assert split.shape == (2, 1, 6, 6)
    for n in range(3):
        for j in range(2):
            assert torch.equal(split[:, :, n * 2 + j], x[:, :, n, j * 6 : (j + 1) * 6])
    # merging inverts splitting: with the layer replaced by the identity the level is the identity
    level.layers[0].forward = lambda h: h  # type: ignore[method-assign]
    assert torch.equal(level(x), x)
    assert out.shape == x.shape


def test_adaptive_level_too_small_raises():
    with pytest.raises(ConfigError, match="adaptive-patching factor"):
        AdaptivePatchLevel(num_patches=4, d_model=16, factor=4, num_layers=1, expansion=2, dropout=0.0)


def test_prefix_token_depends_only_on_the_resolution_id():
    torch.manual_seed(0)
    model = ttm_tiny(resolution_prefix=True).eval()
    patches = model.patchify(torch.randn(3, 64, 2))
    ids = torch.tensor([1, 1, 4])
    tokens = model.backbone.embed(patches, ids)  # [3, 2, N + 1, D]
    assert tokens.shape[2] == model.num_patches + 1
    # the prefix (token 0) is the same for every channel and every window with the same id, whatever the data
    assert torch.equal(tokens[0, 0, 0], tokens[1, 1, 0])
    assert torch.allclose(tokens[0, 0, 0], model.backbone.prefix(torch.tensor([1]))[0], atol=1e-6)
    assert not torch.allclose(tokens[0, 0, 0], tokens[2, 0, 0])
    # the other tokens are the plain patch embeddings, untouched by the id
    assert torch.allclose(tokens[:, :, 1:], model.backbone.patch_embed(patches), atol=1e-6)
    # the forecast changes with the id only
    past = torch.randn(1, 64, 1)
    a, b = model(past, torch.tensor([1])), model(past, torch.tensor([2]))
    assert not torch.allclose(a, b)
    assert torch.equal(a, model(past.clone(), torch.tensor([1])))
    with pytest.raises(ValueError, match="resolution"):
        model(past)


def test_pretrain_mode_is_channel_independent():
    torch.manual_seed(0)
    model = ttm_tiny(resolution_prefix=True).eval()
    past = torch.randn(2, 64, 3)
    ids = torch.tensor([0, 2])
    base = model(past, ids)
    perturbed = past.clone()
    perturbed[:, :, 1] += torch.randn(2, 64) * 3
    out = model(perturbed, ids)
    assert torch.allclose(out[..., [0, 2]], base[..., [0, 2]], atol=1e-6)
    assert not torch.allclose(out[..., 1], base[..., 1])
    # and each channel equals the univariate forecast of that channel alone
    assert torch.allclose(model(past[..., 2:3], ids)[..., 0], base[..., 2], atol=1e-6)


def test_channel_mixing_decoder_couples_channels():
    torch.manual_seed(0)
    model = ttm_tiny(num_channels=3, decoder_channel_mixing=True).eval()
    past = torch.randn(2, 64, 3)
    perturbed = past.clone()
    perturbed[:, :, 1] += 3.0 * torch.randn(2, 64)
    assert not torch.allclose(model(perturbed)[..., 0], model(past)[..., 0])


def test_exogenous_mixer_reads_the_exogenous_future_only():
    torch.manual_seed(0)
    model = ttm_tiny(num_channels=3, exogenous_channels=[2]).eval()
    assert model.target_channels == [0, 1]
    past, future = torch.randn(2, 64, 3), torch.randn(2, 12 + 4, 3)
    base = model(past, future=future)
    assert base.shape == (2, 16, 2)
    changed = future.clone()
    changed[..., 2] += torch.randn(2, 16)
    assert not torch.allclose(model(past, future=changed), base)  # the exogenous future drives the forecast
    hidden = future.clone()
    hidden[..., :2] = torch.randn(2, 16, 2)  # the targets' future must not leak in
    assert torch.equal(model(past, future=hidden), base)
    # step t only sees exogenous values at t-1..t+1 (k = 1)
    local = future.clone()
    local[:, 10, 2] += 5.0
    delta = (model(past, future=local) - base).abs().sum(dim=(0, 2))
    assert (delta[[9, 10, 11]] > 0).all() and (delta[:9] == 0).all() and (delta[12:] == 0).all()
    with pytest.raises(ValueError, match="future"):
        model(past)


def test_exogenous_mixer_by_hand():
    """k = 0, identity-free check: the correction is Linear(Gate([base, exogenous])) added to the base."""
    from paperzoo.timeseries.ttm.model import ExogenousMixer

    torch.manual_seed(0)
    mixer = ExogenousMixer(num_targets=1, num_exogenous=1, context=0)
    base, exo, past = torch.randn(2, 5, 1), torch.randn(2, 5, 1), torch.randn(2, 7, 2)
    z = torch.cat([base, exo], dim=-1)
    gate = torch.softmax(z @ mixer.gate.proj.weight.T + mixer.gate.proj.bias, dim=-1)
    expected = base + (z * gate) @ mixer.proj.weight.T + mixer.proj.bias
    assert torch.allclose(mixer(base, exo, past), expected, atol=1e-6)


def test_scaling_makes_the_forecast_equivariant():
    torch.manual_seed(0)
    model = ttm_tiny().eval()
    past = torch.randn(2, 64, 1)
    assert torch.allclose(model(3.0 * past + 7.0), 3.0 * model(past) + 7.0, atol=1e-4)


def test_load_pretrained_adds_only_fine_tuning_blocks():
    pretrained = ttm_tiny(resolution_prefix=True)
    fine = ttm_tiny(resolution_prefix=True, num_channels=3, decoder_channel_mixing=True, exogenous_channels=[2])
    fresh = fine.load_pretrained(pretrained.state_dict())
    assert fresh and all(".channel_mixer." in k or k.startswith("exogenous_mixer.") for k in fresh)
    assert torch.equal(fine.backbone.patch_embed.weight, pretrained.backbone.patch_embed.weight)
    assert torch.equal(fine.head.weight, pretrained.head.weight)
    with pytest.raises(ConfigError, match="shapes"):
        ttm_tiny(prediction_length=24).load_pretrained(ttm_tiny().state_dict())


def test_frozen_backbone_gets_no_gradient():
    model = ttm_tiny(num_channels=2, decoder_channel_mixing=True)
    model.freeze_backbone()
    model(torch.randn(4, 64, 2)).pow(2).mean().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert model.head.weight.grad is not None
