"""Weight porting between our `TSMixer` and `transformers`' `PatchTSMixerForPrediction` (both directions).

`to_patchtsmixer(model)` builds a `PatchTSMixerForPrediction` with the same weights; `from_patchtsmixer(hf)` builds
a `TSMixer` from one. On identical weights both give the same forecasts (tests/test_tsmixer_peers.py, atol 1e-5).
`transformers` is imported lazily (it is a `peers` dependency, not a runtime one).

Options that map (ours <-> `PatchTSMixerConfig`):

=============================================  ==========================================================
ours (`TSMixer`)                               `PatchTSMixerConfig`
=============================================  ==========================================================
num_channels                                   num_input_channels
context_length                                 context_length
prediction_length                              prediction_length
patch_length, patch_stride                     patch_length, patch_stride (both drop the oldest steps)
d_model                                        d_model
num_layers                                     num_layers
expansion_factor                               expansion_factor
dropout                                        dropout
head_dropout                                   head_dropout
mode "common_channel" / "mix_channel"          mode "common_channel" / "mix_channel"
gated_attn                                     gated_attn
norm "LayerNorm" / "BatchNorm"                 norm_mlp "LayerNorm" / "BatchNorm"
norm_eps                                       norm_eps
revin=True, revin_affine=False (eps 1e-5)      scaling="std" (or True); minimum_scale 1e-5
revin=False                                    scaling=None
channel_gate_before_mlp=True (mix mode)        (fixed: the released channel mixer gates the MLP input)
loss: MSE (ForecastingTask)                    loss="mse"
=============================================  ==========================================================

Weights: `backbone.embed` <-> `model.encoder.patcher`; `backbone.layers.{i}.{patch,feature,channel}_mixer` <->
`model.encoder.mlp_mixer_encoder.mixers.{i}.{patch,feature,channel_feature}_mixer` with `norm.norm` <->
`norm.norm` (LayerNorm) or `norm.norm.batchnorm` (BatchNorm, running statistics included), `mlp.fc1/fc2` <->
`mlp.fc1/fc2`, `gate.proj` <-> `gating_block.attn_layer`; `head.linear` <-> `head.base_forecast_block`.

Options that do not map (a ConfigError names them):

- ours only: `mode="hybrid"` / `channel_context` (cross-channel reconciliation head), `hierarchy_head`,
  `revin_affine=True`, and `channel_gate_before_mlp=False` in "mix_channel" mode (the paper's gate order);
- theirs only: `self_attn` (+ `self_attn_heads`), `use_positional_encoding` (+ `positional_encoding_type`),
  `scaling="mean"`, `loss="nll"` with `distribution_output` / `num_parallel_samples`, `prediction_channel_indices`.
  Pretraining-only options (`mask_type`, `random_mask_ratio`, `num_forecast_mask_patches`,
  `channel_consistent_masking`, `unmasked_channel_indices`, `mask_value`, `masked_loss`) and the
  classification/regression ones (`num_targets`, `output_range`, `head_aggregation`) do not affect the forecaster;
  `init_std` only affects initialisation.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.tsmixer.model import ForecastHead, MixerBlock, TSMixer

_HF_PREFIX = "model.encoder.mlp_mixer_encoder.mixers."
_MIXER_NAMES = {
    "patch_mixer": "patch_mixer",
    "feature_mixer": "feature_mixer",
    "channel_mixer": "channel_feature_mixer",
}


def _our_key_to_hf(key: str, batch_norm: bool) -> str:
    if key.startswith("backbone.embed."):
        return "model.encoder.patcher." + key.removeprefix("backbone.embed.")
    if key.startswith("head.linear."):
        return "head.base_forecast_block." + key.removeprefix("head.linear.")
    match = re.fullmatch(r"backbone\.layers\.(\d+)\.(patch_mixer|feature_mixer|channel_mixer)\.(.+)", key)
    if match is None:
        raise ConfigError(f"parameter {key!r} has no counterpart in PatchTSMixerForPrediction")
    index, mixer, rest = match.groups()
    if rest.startswith("norm.norm.") and batch_norm:
        rest = "norm.norm.batchnorm." + rest.removeprefix("norm.norm.")
    rest = rest.replace("gate.proj.", "gating_block.attn_layer.")
    return f"{_HF_PREFIX}{index}.{_MIXER_NAMES[mixer]}.{rest}"


def _first_block(model: TSMixer) -> MixerBlock:
    return model.backbone.layers[0].patch_mixer


def patchtsmixer_config(model: TSMixer) -> Any:
    """The `PatchTSMixerConfig` equivalent to `model` (ConfigError if `model` uses an option HF lacks)."""
    from transformers import PatchTSMixerConfig

    if model.mode == "hybrid" or model.channel_head is not None:
        raise ConfigError(
            "the cross-channel reconciliation head (mode='hybrid'/channel_context) has no PatchTSMixer equivalent"
        )
    if model.has_hierarchy_head:
        raise ConfigError("the hierarchy reconciliation head (hierarchy_head=True) has no PatchTSMixer equivalent")
    if model.revin is not None and model.revin.affine:
        raise ConfigError("revin_affine=True has no PatchTSMixer equivalent; expected revin_affine=False")
    layers = model.backbone.layers
    if model.mode == "mix_channel" and not layers[0].channel_mixer.gate_before_mlp and layers[0].channel_mixer.gate:
        raise ConfigError(
            "PatchTSMixer gates the channel mixer's input; "
            "build the TSMixer with channel_gate_before_mlp=True to port it"
        )
    block = _first_block(model)
    assert isinstance(model.head, ForecastHead)
    return PatchTSMixerConfig(
        context_length=model.context_length,
        patch_length=model.patch_length,
        patch_stride=model.patch_stride,
        num_input_channels=model.num_channels,
        prediction_length=model.prediction_length,
        d_model=model.backbone.embed.out_features,
        num_layers=len(layers),
        expansion_factor=block.mlp.fc1.out_features // block.mlp.fc1.in_features,
        dropout=block.mlp.dropout.p,
        head_dropout=model.head.dropout.p,
        mode=model.mode,
        gated_attn=block.gate is not None,
        norm_mlp=block.norm.kind,
        norm_eps=block.norm.norm.eps,
        scaling="std" if model.revin is not None else None,
        loss="mse",
        self_attn=False,
        use_positional_encoding=False,
    )


def to_patchtsmixer(model: TSMixer) -> Any:
    """A `transformers.PatchTSMixerForPrediction` with `model`'s configuration and weights (train/eval mode kept)."""
    from transformers import PatchTSMixerForPrediction

    config = patchtsmixer_config(model)
    hf = PatchTSMixerForPrediction(config)
    batch_norm = config.norm_mlp == "BatchNorm"
    state = {_our_key_to_hf(k, batch_norm): v for k, v in model.state_dict().items() if not k.startswith("revin.")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise ConfigError(
            f"porting to PatchTSMixer left parameters unmatched: missing {missing}, unexpected {unexpected}"
        )
    return hf.train(model.training)


def from_patchtsmixer(hf: Any) -> TSMixer:
    """A `TSMixer` with the configuration and weights of a `transformers.PatchTSMixerForPrediction`."""
    config = hf.config
    unsupported = {
        "self_attn": config.self_attn,
        "use_positional_encoding": config.use_positional_encoding,
        "prediction_channel_indices": config.prediction_channel_indices is not None,
        "loss='nll'": config.loss != "mse",
        "scaling='mean'": config.scaling == "mean",
    }
    bad = [name for name, used in unsupported.items() if used]
    if bad:
        raise ConfigError(f"PatchTSMixer options {', '.join(bad)} have no TSMixer equivalent")
    model = TSMixer(
        num_channels=config.num_input_channels,
        context_length=config.context_length,
        prediction_length=config.prediction_length,
        patch_length=config.patch_length,
        patch_stride=config.patch_stride,
        d_model=config.d_model,
        num_layers=config.num_layers,
        expansion_factor=config.expansion_factor,
        dropout=config.dropout,
        head_dropout=config.head_dropout,
        mode=config.mode,
        gated_attn=config.gated_attn,
        norm="BatchNorm" if "batch" in config.norm_mlp.lower() else "LayerNorm",
        norm_eps=config.norm_eps,
        revin=config.scaling in ("std", True),
        channel_gate_before_mlp=True,
    )
    batch_norm = "batch" in config.norm_mlp.lower()
    hf_state = hf.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key in model.state_dict():
        if key.startswith("revin."):
            continue
        hf_key = _our_key_to_hf(key, batch_norm)
        if hf_key not in hf_state:
            raise ConfigError(f"PatchTSMixer has no parameter {hf_key!r} for {key!r}")
        state[key] = hf_state[hf_key]
    model.load_state_dict(state, strict=False)
    return model.train(hf.training)
