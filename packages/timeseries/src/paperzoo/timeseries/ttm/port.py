"""Weight porting between our `TinyTimeMixer` and granite-tsfm's `TinyTimeMixerForPrediction`.

`granite_config(model)` builds the equivalent `TinyTimeMixerConfig` and `to_granite(model)` a
`TinyTimeMixerForPrediction` holding our weights (eval-mode forecasts equal ours; `tests/test_ttm_peers.py`).

Options that map (ours -> granite):
    context_length, prediction_length -> same; patch_length -> patch_length = patch_stride;
    d_model, num_layers, adaptive_patching_levels, expansion, dropout, head_dropout -> same names
    (expansion -> expansion_factor); decoder_d_model, decoder_num_layers, decoder_adaptive_patching_levels -> same;
    resolution_prefix -> resolution_prefix_tuning; num_resolutions -> frequency_token_vocab_size;
    num_channels -> num_input_channels; decoder_channel_mixing -> decoder_mode "mix_channel" (else
    "common_channel"); target_channels -> prediction_channel_indices; exogenous_channels ->
    exogenous_channel_indices and enable_forecast_channel_mixing; exogenous_context -> fcm_context_length;
    scaling -> scaling "std" (else None).
Fixed on the granite side: mode "common_channel" (channel-independent backbone), gated_attn, LayerNorm,
no positional encoding, no self-attention, fcm_prepend_past, fcm_use_mixer False, use_decoder.
Not mappable: granite's exogenous mixer reads *unscaled* past/future values (ours scales them with the window's
statistics), so forecasts with an exogenous mixer agree only on windows whose mean is 0 and scale 1.
"""

from typing import Any

import torch

from paperzoo.timeseries.ttm.model import TinyTimeMixer, TTMMixer


def granite_config(model: TinyTimeMixer) -> Any:
    from tsfm_public.models.tinytimemixer import TinyTimeMixerConfig

    decoder_layers = [layer for level in model.decoder.mixer.levels for layer in level.layers]
    decoder_mixes = any(layer.channel_mixer is not None for layer in decoder_layers)
    backbone_levels = model.backbone.mixer.levels
    decoder_levels = model.decoder.mixer.levels
    first_fc1 = next(m.feature_mixer.mlp.fc1 for m in backbone_levels[-1].layers)
    expansion = first_fc1.out_features // first_fc1.in_features
    d_model = model.backbone.patch_embed.out_features
    decoder_d_model = model.head.in_features // (model.num_patches + (1 if model.backbone.prefix else 0))
    return TinyTimeMixerConfig(
        context_length=model.context_length,
        prediction_length=model.prediction_length,
        patch_length=model.patch_length,
        patch_stride=model.patch_length,
        num_input_channels=model.num_channels or 1,
        d_model=d_model,
        num_layers=len(backbone_levels[0].layers),
        adaptive_patching_levels=_levels(model.backbone.mixer),
        expansion_factor=expansion,
        dropout=backbone_levels[0].layers[0].feature_mixer.mlp.dropout.p,
        head_dropout=model.head_dropout.p,
        decoder_d_model=decoder_d_model,
        decoder_num_layers=len(decoder_levels[0].layers),
        decoder_adaptive_patching_levels=_levels(model.decoder.mixer),
        decoder_mode="mix_channel" if decoder_mixes else "common_channel",
        resolution_prefix_tuning=model.backbone.prefix is not None,
        frequency_token_vocab_size=model.backbone.num_resolutions,
        prediction_channel_indices=_targets(model),
        exogenous_channel_indices=model.exogenous_channels or None,
        enable_forecast_channel_mixing=model.exogenous_mixer is not None,
        fcm_context_length=model.exogenous_mixer.context if model.exogenous_mixer is not None else 1,
        fcm_gated_attn=True,
        fcm_use_mixer=False,
        fcm_prepend_past=True,
        scaling="std" if model.scaling else None,
        mode="common_channel",
        gated_attn=True,
        norm_mlp="LayerNorm",
        use_positional_encoding=False,
        self_attn=False,
        use_decoder=True,
        loss="mse",
    )


def _targets(model: TinyTimeMixer) -> list[int] | None:
    everything = list(range(model.num_channels or 1))
    return None if model.target_channels is None or model.target_channels == everything else model.target_channels


def _levels(mixer: TTMMixer) -> int:
    return 0 if mixer.factors == [1] else len(mixer.factors)


def _mixer_keys(ours: str, theirs: str, mixer: TTMMixer, adaptive: bool) -> dict[str, str]:
    """Key renames of one mixer stack (ours `levels.i.layers.j` -> theirs `mixers.i.mixer_layers.j` or `mixers.j`)."""
    names = {
        "patch_mixer.gate.proj.": "patch_mixer.gating_block.attn_layer.",
        "feature_mixer.gate.proj.": "feature_mixer.gating_block.attn_layer.",
        "channel_mixer.gate.proj.": "channel_feature_mixer.gating_block.attn_layer.",
        "channel_mixer.": "channel_feature_mixer.",
    }
    renames = {}
    for i, level in enumerate(mixer.levels):
        for j, layer in enumerate(level.layers):
            source = f"{ours}.levels.{i}.layers.{j}."
            target = f"{theirs}.mixers.{i}.mixer_layers.{j}." if adaptive else f"{theirs}.mixers.{j}."
            for key in layer.state_dict():
                mapped = key
                for a, b in names.items():
                    if key.startswith(a):
                        mapped = b + key[len(a) :]
                        break
                renames[source + key] = target + mapped
    return renames


def granite_state_dict(model: TinyTimeMixer) -> dict[str, torch.Tensor]:
    """Our state dict under granite's `TinyTimeMixerForPrediction` key names."""
    renames = {
        "backbone.patch_embed.weight": "backbone.encoder.patcher.weight",
        "backbone.patch_embed.bias": "backbone.encoder.patcher.bias",
        "backbone.prefix.embed.weight": "backbone.encoder.freq_mod.0.weight",
        "backbone.prefix.mlp.0.weight": "backbone.encoder.freq_mod.1.weight",
        "backbone.prefix.mlp.0.bias": "backbone.encoder.freq_mod.1.bias",
        "backbone.prefix.mlp.2.weight": "backbone.encoder.freq_mod.3.weight",
        "backbone.prefix.mlp.2.bias": "backbone.encoder.freq_mod.3.bias",
        "decoder.adapter.weight": "decoder.adapter.weight",
        "decoder.adapter.bias": "decoder.adapter.bias",
        "head.weight": "head.base_forecast_block.weight",
        "head.bias": "head.base_forecast_block.bias",
        "exogenous_mixer.gate.proj.weight": "head.fcm_block.fcm_gating_block.attn_layer.weight",
        "exogenous_mixer.gate.proj.bias": "head.fcm_block.fcm_gating_block.attn_layer.bias",
        "exogenous_mixer.proj.weight": "head.fcm_block.mlp.weight",
        "exogenous_mixer.proj.bias": "head.fcm_block.mlp.bias",
    }
    renames |= _mixer_keys(
        "backbone.mixer", "backbone.encoder.mlp_mixer_encoder", model.backbone.mixer, _levels(model.backbone.mixer) > 0
    )
    renames |= _mixer_keys(
        "decoder.mixer", "decoder.decoder_block", model.decoder.mixer, _levels(model.decoder.mixer) > 0
    )
    state = model.state_dict()
    missing = sorted(set(state) - set(renames))
    if missing:
        raise KeyError(f"no granite name for {missing[:3]}")
    return {renames[key]: value for key, value in state.items()}


def to_granite(model: TinyTimeMixer) -> Any:
    """A `TinyTimeMixerForPrediction` with our weights (strict load: every tensor maps one to one)."""
    from tsfm_public.models.tinytimemixer import TinyTimeMixerForPrediction

    peer = TinyTimeMixerForPrediction(granite_config(model))
    peer.load_state_dict(granite_state_dict(model), strict=True)
    return peer
