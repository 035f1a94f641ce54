"""Our TTM and granite-tsfm's `TinyTimeMixerForPrediction` give equal forecasts on identical weights."""

import pytest
import torch

from paperzoo.timeseries.ttm.model import ttm_tiny
from paperzoo.timeseries.ttm.port import to_granite

pytest.importorskip("tsfm_public")

CONFIGS = {
    "pretrain": dict(),
    "prefix": dict(resolution_prefix=True),
    "no adaptive patching, adaptive decoder": dict(adaptive_patching_levels=0, decoder_adaptive_patching_levels=2),
    "3 levels, d_model = decoder_d_model": dict(adaptive_patching_levels=3, d_model=48, decoder_d_model=48),
    "channel-mixing decoder": dict(num_channels=3, decoder_channel_mixing=True, resolution_prefix=True),
    "exogenous mixer": dict(
        num_channels=4, decoder_channel_mixing=True, exogenous_channels=[1, 3], resolution_prefix=True
    ),
    "exogenous mixer, k=2, targets subset": dict(
        num_channels=4, target_channels=[0], exogenous_channels=[2, 3], exogenous_context=2
    ),
}


def standardized(x: torch.Tensor) -> torch.Tensor:
    """Windows whose per-channel mean is 0 and scale sqrt(var + 1e-5) is 1 (granite's exogenous mixer reads
    unscaled values, ours scaled ones: on such windows the two coincide)."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.std(dim=1, keepdim=True, unbiased=False) * (1 - 1e-5) ** 0.5


@pytest.mark.peers
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forecasts_equal_granite_on_identical_weights(name):
    torch.manual_seed(0)
    ours = ttm_tiny(**CONFIGS[name]).eval()
    peer = to_granite(ours).eval()
    channels = ours.num_channels or 2
    past = torch.randn(3, ours.context_length, channels) * 2.0 + 1.0
    future = torch.randn(3, ours.prediction_length, channels)
    if ours.exogenous_channels:
        past = standardized(past)
    resolution = torch.tensor([0, 3, 6]) if ours.backbone.prefix is not None else None
    expected = peer(past_values=past, future_values=future, freq_token=resolution).prediction_outputs
    got = ours(past, resolution, future)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.peers
def test_parameter_counts_match():
    ours = ttm_tiny(num_channels=3, decoder_channel_mixing=True, exogenous_channels=[2], resolution_prefix=True)
    peer = to_granite(ours)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in peer.parameters())
