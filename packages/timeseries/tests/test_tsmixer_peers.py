"""Peers: our TSMixer and `transformers`' PatchTSMixerForPrediction give the same forecasts on the same weights."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.tsmixer.model import TSMixer

pytestmark = pytest.mark.peers


@pytest.mark.parametrize("norm", ["LayerNorm", "BatchNorm"])
@pytest.mark.parametrize("mode", ["common_channel", "mix_channel"])
def test_ported_weights_give_equal_forecasts_both_ways(mode, norm):
    pytest.importorskip("transformers")
    from paperzoo.timeseries.tsmixer.porting import from_patchtsmixer, to_patchtsmixer

    torch.manual_seed(0)
    ours = TSMixer(
        4,
        37,
        9,
        patch_length=8,
        patch_stride=5,
        d_model=8,
        num_layers=2,
        mode=mode,
        norm=norm,
        gated_attn=True,
        channel_gate_before_mlp=True,
    )
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.3)  # far from init, so that a mis-mapped weight shows
    ours.eval()
    theirs = to_patchtsmixer(ours).eval()
    assert theirs.config.mode == mode and theirs.config.gated_attn
    past = torch.randn(5, 37, 4) * 3 + 2
    expected = ours(past)
    torch.testing.assert_close(theirs(past_values=past).prediction_outputs, expected, atol=1e-5, rtol=0)
    back = from_patchtsmixer(theirs).eval()
    torch.testing.assert_close(back(past), expected, atol=1e-5, rtol=0)


def test_options_without_a_peer_equivalent_are_refused():
    pytest.importorskip("transformers")
    from transformers import PatchTSMixerConfig, PatchTSMixerForPrediction

    from paperzoo.timeseries.tsmixer.porting import from_patchtsmixer, to_patchtsmixer

    for kwargs in ({"mode": "hybrid"}, {"hierarchy_head": True}, {"mode": "mix_channel"}, {"revin_affine": True}):
        with pytest.raises(ConfigError):
            to_patchtsmixer(TSMixer(2, 16, 4, **kwargs))
    config = PatchTSMixerConfig(
        context_length=16, patch_length=4, patch_stride=4, num_input_channels=2, prediction_length=4, self_attn=True
    )
    with pytest.raises(ConfigError, match="self_attn"):
        from_patchtsmixer(PatchTSMixerForPrediction(config))
