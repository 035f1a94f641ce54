"""Tiny Time Mixers (TTM): a < 1M-parameter pre-trained forecaster built from TSMixer blocks.

Ekambaram et al., "Tiny Time Mixers (TTMs): Fast Pre-trained Models for Enhanced Zero/Few-Shot Forecasting of
Multivariate Time Series", NeurIPS 2024, https://arxiv.org/abs/2401.03955 (reference code: ibm-granite/granite-tsfm,
`tsfm_public.models.tinytimemixer`; read for facts, not copied).

What is implemented (plain `nn.Module`s, no Lightning):

- **Per-window standard scaling** (RevIN without affine parameters, the reference's "std" scaler):
  `x_hat = (x - mean) / sqrt(var + 1e-5)` over the lookback of each channel, undone on the forecast.
- **Patching**: the lookback `[B, L, C]` becomes `N = L // p` non-overlapping patches per channel (the leading
  `L mod p` steps are dropped), embedded by one shared `Linear(p, d)`.
- **Resolution prefix tuning**: a learned embedding of the sampling-resolution id,
  `Embedding(R, p) -> Linear -> GELU -> Linear(d)`, prepended to every channel's patch sequence as an extra token
  (so the backbone sees `N + 1` tokens). The token depends only on the resolution id.
- **TSMixer backbone with adaptive patching**: `levels` mixer levels; level `i` (of `levels`, first to last) reshapes
  the hidden patches `[B, C, N, d]` into `[B, C, N * f, d / f]` with `f = 2 ** (levels - 1 - i)` (each patch split
  into `f` finer sub-patches), runs `num_layers` mixer layers there, and merges back. So the first level mixes
  the finest patches and the last the original ones: different patch lengths at different levels.
  A mixer layer is a patch-mixing block (MLP across patches) then a feature-mixing block (MLP across hidden
  features), each `x + Gate(MLP(LayerNorm(x)))` with gated attention `Gate(z) = z * softmax(W z + b)`. The
  backbone is channel-independent: every channel goes through the same weights on its own.
- **Decoder**: an adapter `Linear(d, d_dec)` and a smaller mixer (`decoder_num_layers` layers); in fine-tuning it
  can also mix channels (a channel-mixing block `x + MLP(Gate(LayerNorm(x)))` across channels, first in each layer:
  TSMixer's hybrid channel modelling).
- **Head**: flatten the decoder's patches and project to the horizon, `Linear(N' * d_dec, H)`.
- **Exogenous mixer** (the reference's forecast-channel head mixer): target-channel forecasts are refined with the
  exogenous channels' *known future values*: for each horizon step t, the values of all (target + exogenous)
  channels at steps t - k .. t + k (the last k past values prepended, zeros appended) are flattened, gated and
  mapped to a residual correction of the target channels.
- **Multi-level fine-tuning**: `freeze_backbone()` freezes the pre-trained backbone; the decoder (with channel
  mixing), head and exogenous mixer are tuned. `load_pretrained` loads a channel-independent pretrained state dict
  into a model with channel mixing / exogenous mixer (those new blocks keep their fresh initialisation).

Reused: the mixer layer (patch/feature/channel `MixerBlock`s with gated attention) and `patch_input` of
`paperzoo.timeseries.tsmixer.model` (TTM's backbone *is* TSMixer's), `RevIN` of `paperzoo.timeseries.layers`.
New here: adaptive-patching levels, the resolution prefix, the decoder, the exogenous mixer, fine-tuning helpers.

Known deviations from the reference code:
- the per-window statistics are detached from the graph (`RevIN`, as PatchTST's reference code does); the
  reference TTM back-propagates through them. Forward values are identical;
- only LayerNorm (the reference also offers BatchNorm), no positional encoding (off in TTM's released configs),
  no self-attention, no register tokens/FFT patches/multi-quantile heads (later TTM releases, not in the paper);
- the exogenous mixer scales the exogenous future values and the prepended past values with the lookback window's
  statistics, so that they live in the same space as the (scaled) base forecasts; the reference feeds them
  unscaled. The two agree when a window already has mean 0 and scale 1 (the peers test uses such windows);
- the reference silently disables an adaptive-patching level when `d_model // f <= 4`; we raise instead.
"""

import torch
from torch import nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.timeseries.layers import RevIN
from paperzoo.timeseries.tsmixer.model import GatedAttention, MixerLayer, patch_input

#: minimum variance added before the square root of the per-window scaler (the reference's `minimum_scale`).
SCALE_EPS = 1e-5


def mixer_layer(num_patches: int, d_model: int, expansion: int, dropout: float, num_channels: int | None) -> MixerLayer:
    """A TSMixer layer (`paperzoo.timeseries.tsmixer`) configured as TTM's: LayerNorm, gated attention, the channel
    mixer (when `num_channels` is given) gating its MLP's input as the reference code does."""
    return MixerLayer(
        num_channels=num_channels or 1,
        num_patches=num_patches,
        d_model=d_model,
        expansion_factor=expansion,
        dropout=dropout,
        mix_channels=num_channels is not None,
        gated_attn=True,
        norm="LayerNorm",
        channel_gate_before_mlp=True,
    )


class AdaptivePatchLevel(nn.Module):
    """One adaptive-patching level: split every patch into `factor` sub-patches, mix, merge back.

    `[B, C, N, D] -> [B, C, N * f, D / f]` is a row-major reshape: sub-patch `j` of patch `n` is token `n * f + j`
    and holds features `j * D / f .. (j + 1) * D / f - 1` of patch `n`.

    Args:
        num_patches: N at the input of the level.
        d_model: D at the input of the level.
        factor: f, the number of sub-patches per patch (1: no adaptive patching).
        num_layers: mixer layers run at the finer patching.
        expansion, dropout, num_channels: see `TTMMixer`.
    """

    def __init__(
        self,
        num_patches: int,
        d_model: int,
        factor: int,
        num_layers: int,
        expansion: int,
        dropout: float,
        num_channels: int | None = None,
    ):
        super().__init__()
        require(
            d_model % factor == 0 and (factor == 1 or d_model // factor > 4),
            f"d_model={d_model} must be divisible by the adaptive-patching factor {factor} with more than 4 features "
            "left per sub-patch; lower adaptive_patching_levels or raise d_model",
        )
        self.factor = factor
        self.layers = nn.ModuleList(
            mixer_layer(num_patches * factor, d_model // factor, expansion, dropout, num_channels)
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, num_patches, d_model = x.shape
        h = x.reshape(batch, channels, num_patches * self.factor, d_model // self.factor)
        for layer in self.layers:
            h = layer(h)
        return h.reshape(batch, channels, num_patches, d_model)


class TTMMixer(nn.Module):
    """A stack of adaptive-patching levels (the TTM backbone's and decoder's mixer).

    Args:
        num_patches: N.
        d_model: D.
        num_layers: mixer layers per level.
        adaptive_patching_levels: number of levels; level i (0-based) uses factor 2 ** (levels - 1 - i). 0 means
            one plain stack of `num_layers` layers (no adaptive patching), as in the reference.
        expansion, dropout: MLP expansion factor and dropout.
        num_channels: C when the layers mix channels; None for channel-independent layers.

    Shapes: `[B, C, N, D] -> [B, C, N, D]`.
    """

    def __init__(
        self,
        num_patches: int,
        d_model: int,
        num_layers: int,
        adaptive_patching_levels: int = 0,
        expansion: int = 2,
        dropout: float = 0.2,
        num_channels: int | None = None,
    ):
        super().__init__()
        require(num_patches >= 2, f"the mixer needs at least 2 patches (tokens), got {num_patches}")
        require(adaptive_patching_levels >= 0, f"adaptive_patching_levels={adaptive_patching_levels} must be >= 0")
        factors = [2**i for i in reversed(range(adaptive_patching_levels))] or [1]
        self.factors = factors
        self.levels = nn.ModuleList(
            AdaptivePatchLevel(num_patches, d_model, f, num_layers, expansion, dropout, num_channels) for f in factors
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.levels:
            x = level(x)
        return x


class ResolutionPrefix(nn.Module):
    """The resolution prefix token: `Embedding(R, p) -> Linear(p, m) -> GELU -> Linear(m, D)`, m = (p + D) // 2.

    Shapes: `resolution [B] int64 -> [B, D]`.
    """

    def __init__(self, num_resolutions: int, patch_length: int, d_model: int):
        super().__init__()
        hidden = (patch_length + d_model) // 2
        self.embed = nn.Embedding(num_resolutions, patch_length)
        self.mlp = nn.Sequential(nn.Linear(patch_length, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, resolution: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(resolution.long()))


class TTMBackbone(nn.Module):
    """Patch embedding, optional resolution prefix and the adaptive-patching mixer. Channel-independent.

    Shapes: `patches [B, C, N, p]`, `resolution [B]` -> `[B, C, N (+1 with the prefix), D]`.
    """

    def __init__(
        self,
        num_patches: int,
        patch_length: int,
        d_model: int,
        num_layers: int,
        adaptive_patching_levels: int,
        expansion: int,
        dropout: float,
        resolution_prefix: bool,
        num_resolutions: int,
    ):
        super().__init__()
        self.patch_embed = nn.Linear(patch_length, d_model)
        self.prefix = ResolutionPrefix(num_resolutions, patch_length, d_model) if resolution_prefix else None
        self.num_resolutions = num_resolutions
        tokens = num_patches + (1 if resolution_prefix else 0)
        self.mixer = TTMMixer(tokens, d_model, num_layers, adaptive_patching_levels, expansion, dropout)

    def embed(self, patches: torch.Tensor, resolution: torch.Tensor | None) -> torch.Tensor:
        """The backbone's input tokens `[B, C, N (+1), D]` (the prefix token first)."""
        tokens = self.patch_embed(patches)  # [B, C, N, D]
        if self.prefix is None:
            return tokens
        if resolution is None:
            raise ValueError("this TTM uses resolution prefix tuning: pass `resolution` ([B] int64 resolution ids)")
        if resolution.numel() and (int(resolution.min()) < 0 or int(resolution.max()) >= self.num_resolutions):
            raise ValueError(
                f"resolution ids must lie in [0, {self.num_resolutions}); got {resolution.min()}..{resolution.max()}"
            )
        prefix = self.prefix(resolution)  # [B, D]
        prefix = prefix[:, None, None, :].expand(tokens.shape[0], tokens.shape[1], 1, tokens.shape[3])
        return torch.cat([prefix, tokens], dim=2)

    def forward(self, patches: torch.Tensor, resolution: torch.Tensor | None = None) -> torch.Tensor:
        return self.mixer(self.embed(patches, resolution))


class TTMDecoder(nn.Module):
    """Adapter `Linear(D, D_dec)` and a small mixer, channel-mixing when `num_channels` is given.

    Shapes: `[B, C, N, D] -> [B, C, N, D_dec]`.
    """

    def __init__(
        self,
        num_patches: int,
        d_model: int,
        decoder_d_model: int,
        num_layers: int,
        adaptive_patching_levels: int,
        expansion: int,
        dropout: float,
        num_channels: int | None,
    ):
        super().__init__()
        self.adapter = nn.Linear(d_model, decoder_d_model) if d_model != decoder_d_model else None
        self.mixer = TTMMixer(
            num_patches, decoder_d_model, num_layers, adaptive_patching_levels, expansion, dropout, num_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter is not None:
            x = self.adapter(x)
        return self.mixer(x)


class ExogenousMixer(nn.Module):
    """Refines target-channel forecasts with the exogenous channels' known future values.

    For every horizon step t the values of all `T + E` channels (target base forecasts, then exogenous future
    values) at steps `t - k .. t + k` form a `(T + E) * (2k + 1)` vector (past values fill steps before the horizon,
    zeros those after it); `Linear(Gate(vector))` is added to the target forecasts as a residual.

    Args:
        num_targets: T.
        num_exogenous: E.
        context: k, the neighbouring steps on each side (the reference's `fcm_context_length`, default 1).
        gated: gated attention before the projection.

    Shapes: `base [B, H, T]`, `exogenous_future [B, H, E]`, `past [B, L, T + E]` (targets first) -> `[B, H, T]`.
    """

    def __init__(self, num_targets: int, num_exogenous: int, context: int = 1, gated: bool = True):
        super().__init__()
        require(context >= 0, f"exogenous mixer context={context} must be >= 0")
        self.context = context
        width = (num_targets + num_exogenous) * (2 * context + 1)
        self.gate = GatedAttention(width) if gated else None
        self.proj = nn.Linear(width, num_targets)

    def forward(self, base: torch.Tensor, exogenous_future: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        k = self.context
        h = torch.cat([base, exogenous_future], dim=-1)  # [B, H, T + E]
        if k > 0:
            zeros = h.new_zeros(h.shape[0], k, h.shape[2])
            h = torch.cat([past[:, -k:], h, zeros], dim=1)  # [B, H + 2k, T + E]
            h = h.unfold(1, 2 * k + 1, 1)  # [B, H, T + E, 2k + 1]
        h = h.flatten(2)  # [B, H, (T + E) * (2k + 1)]
        if self.gate is not None:
            h = self.gate(h)
        return base + self.proj(h)


class TinyTimeMixer(nn.Module):
    """Tiny Time Mixer: `past [B, L, C] (+ resolution [B], + future exogenous) -> forecast [B, H, T]`.

    The defaults are the paper's TTM (the 512-96 model: p = 64, d = 192, 3 adaptive-patching levels of 2 layers,
    decoder d = 128 with 2 layers), about 0.8M parameters, channel-independent, as pre-trained.

    Args:
        context_length: L.
        prediction_length: H.
        patch_length: p (patches do not overlap). L // p patches; the first L mod p steps are dropped.
        d_model: D, the backbone's hidden size.
        num_layers: mixer layers per adaptive-patching level in the backbone.
        adaptive_patching_levels: backbone levels (0: no adaptive patching).
        expansion: MLP expansion factor.
        dropout: dropout in the backbone's MLPs.
        head_dropout: dropout in the decoder's MLPs and before the head.
        decoder_d_model: the decoder's hidden size.
        decoder_num_layers: decoder mixer layers (per level).
        decoder_adaptive_patching_levels: decoder levels (0: none).
        resolution_prefix: prepend the resolution prefix token (then `forward` needs `resolution`).
        num_resolutions: size of the resolution vocabulary.
        num_channels: C; needed when the decoder mixes channels or an exogenous mixer is used.
        decoder_channel_mixing: add channel-mixing blocks to the decoder (fine-tuning on a fixed channel set).
        target_channels: indices of the channels to forecast (default: all C).
        exogenous_channels: indices of channels whose future values are known; they drive the exogenous mixer.
        exogenous_context: k of the exogenous mixer.
        scaling: per-window standard scaling of the input (undone on the output).
    """

    def __init__(
        self,
        context_length: int = 512,
        prediction_length: int = 96,
        patch_length: int = 64,
        d_model: int = 192,
        num_layers: int = 2,
        adaptive_patching_levels: int = 3,
        expansion: int = 2,
        dropout: float = 0.2,
        head_dropout: float = 0.2,
        decoder_d_model: int = 128,
        decoder_num_layers: int = 2,
        decoder_adaptive_patching_levels: int = 0,
        resolution_prefix: bool = False,
        num_resolutions: int = 7,
        num_channels: int | None = None,
        decoder_channel_mixing: bool = False,
        target_channels: list[int] | None = None,
        exogenous_channels: list[int] | None = None,
        exogenous_context: int = 1,
        scaling: bool = True,
    ):
        super().__init__()
        require(patch_length >= 1, f"patch_length={patch_length} must be >= 1")
        require(
            context_length > patch_length,
            f"context_length={context_length} must be longer than patch_length={patch_length}",
        )
        require(prediction_length >= 1, f"prediction_length={prediction_length} must be >= 1")
        needs_channels = decoder_channel_mixing or bool(exogenous_channels) or target_channels is not None
        require(
            not needs_channels or (num_channels is not None and num_channels >= 1),
            "num_channels must be given when the decoder mixes channels or target/exogenous channels are chosen",
        )
        self.context_length, self.prediction_length, self.patch_length = context_length, prediction_length, patch_length
        self.num_patches = context_length // patch_length
        self.num_channels = num_channels
        self.scaling = scaling
        self.revin = RevIN(num_channels or 1, affine=False, eps=SCALE_EPS)
        exogenous = sorted(exogenous_channels or [])
        if num_channels is not None:
            targets = (
                sorted(target_channels)
                if target_channels is not None
                else [c for c in range(num_channels) if c not in exogenous]
            )
            for index in targets + exogenous:
                require(0 <= index < num_channels, f"channel index {index} is outside [0, {num_channels})")
            require(not set(targets) & set(exogenous), f"channels {set(targets) & set(exogenous)} are both kinds")
            require(len(targets) > 0, "at least one target channel is needed")
        else:
            targets = None
        self.target_channels: list[int] | None = targets
        self.exogenous_channels: list[int] = exogenous

        self.backbone = TTMBackbone(
            self.num_patches,
            patch_length,
            d_model,
            num_layers,
            adaptive_patching_levels,
            expansion,
            dropout,
            resolution_prefix,
            num_resolutions,
        )
        tokens = self.num_patches + (1 if resolution_prefix else 0)
        self.decoder = TTMDecoder(
            tokens,
            d_model,
            decoder_d_model,
            decoder_num_layers,
            decoder_adaptive_patching_levels,
            expansion,
            head_dropout,
            num_channels if decoder_channel_mixing else None,
        )
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(tokens * decoder_d_model, prediction_length)
        self.exogenous_mixer = (
            ExogenousMixer(len(targets or []), len(exogenous), exogenous_context) if exogenous else None
        )

    # --- pieces -------------------------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, L, C] -> [B, C, N, p]`, non-overlapping patches of the last `N * p` steps."""
        if x.shape[1] != self.context_length:
            raise ValueError(f"past has {x.shape[1]} steps; this TTM expects context_length={self.context_length}")
        return patch_input(x, self.patch_length, self.patch_length)  # [B, C, N, p]

    def scale(self, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-window standard scaling: `(past - loc) / scale` with loc, scale `[B, 1, C]`."""
        if not self.scaling:
            ones = past.new_ones(past.shape[0], 1, past.shape[2])
            return past, torch.zeros_like(ones), ones
        scaled, stats = self.revin.normalize(past)
        return scaled, stats.mean, stats.std

    def freeze_backbone(self) -> None:
        """Multi-level fine-tuning: the backbone's parameters stop receiving gradients."""
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Load a pre-trained (channel-independent) state dict; returns the keys left at their initialisation.

        Only the fine-tuning additions (decoder channel mixers, exogenous mixer) may be missing; any other missing,
        unexpected or mis-shaped tensor is a `ConfigError` naming it.
        """
        own = self.state_dict()
        mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
        if mismatched:
            raise ConfigError(
                f"pre-trained tensors {mismatched[:3]} have other shapes than this TTM's (context_length, "
                "prediction_length, patch_length and sizes must match the pre-trained model)"
            )
        result = self.load_state_dict(state_dict, strict=False)
        new_blocks = [k for k in result.missing_keys if ".channel_mixer." in k or k.startswith("exogenous_mixer.")]
        others = sorted(set(result.missing_keys) - set(new_blocks))
        if others or result.unexpected_keys:
            raise ConfigError(
                f"pre-trained state dict does not fit this TTM: missing {others[:3]}, unexpected "
                f"{list(result.unexpected_keys)[:3]}"
            )
        return new_blocks

    # --- forward ------------------------------------------------------------------------------------------------
    def forward(
        self,
        past: torch.Tensor,
        resolution: torch.Tensor | None = None,
        future: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forecast.

        Args:
            past: `[B, L, C]` lookback.
            resolution: `[B]` int64 resolution ids (needed with `resolution_prefix`).
            future: `[B, H, C]` future values; only the exogenous channels are read (needed with an exogenous mixer).

        Returns:
            `[B, H, T]` forecasts of the target channels (all C channels when no targets were chosen).
        """
        if self.num_channels is not None and past.shape[-1] != self.num_channels:
            raise ValueError(f"past has {past.shape[-1]} channels; this TTM was built for {self.num_channels}")
        scaled, loc, scale = self.scale(past)  # [B, L, C], [B, 1, C]
        patches = self.patchify(scaled)  # [B, C, N, p]
        hidden = self.backbone(patches, resolution)  # [B, C, N', D]
        hidden = self.decoder(hidden)  # [B, C, N', D_dec]
        forecast = self.head(self.head_dropout(hidden.flatten(2))).transpose(1, 2)  # [B, H, C]
        if self.target_channels is not None:
            targets = self.target_channels
            forecast, loc_t, scale_t = forecast[..., targets], loc[..., targets], scale[..., targets]
        else:
            loc_t, scale_t = loc, scale
        if self.exogenous_mixer is not None:
            if future is None:
                raise ValueError("this TTM has exogenous channels: pass `future` with their known future values")
            exo = self.exogenous_channels
            exogenous_future = (future[..., exo] - loc[..., exo]) / scale[..., exo]  # [B, H, E]
            mixed_past = scaled[..., (self.target_channels or []) + exo]  # [B, L, T + E]
            forecast = self.exogenous_mixer(forecast, exogenous_future, mixed_past)
        return forecast * scale_t + loc_t


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def ttm_tiny(**overrides: object) -> TinyTimeMixer:
    """A small TTM for tests and CPU checks (L = 64, H = 16, p = 8, D = 32, 2 levels)."""
    config: dict = dict(
        context_length=64,
        prediction_length=16,
        patch_length=8,
        d_model=32,
        num_layers=1,
        adaptive_patching_levels=2,
        decoder_d_model=16,
        decoder_num_layers=1,
        dropout=0.1,
        head_dropout=0.1,
    )
    config.update(overrides)
    return TinyTimeMixer(**config)  # type: ignore[arg-type]
