"""TSMixer (IBM's PatchTSMixer): a lightweight MLP-Mixer for multivariate forecasting on patched series.

Ekambaram, Jati, Nguyen, Sinthong, Kalagnanam, "TSMixer: Lightweight MLP-Mixer Model for Multivariate Time Series
Forecasting", KDD 2023, https://arxiv.org/abs/2306.09364 . Released by the authors as `PatchTSMixer` in HF
`transformers` (not Google's TSMixer, arXiv 2303.06053).

What is implemented (plain `nn.Module`s, no Lightning):

- instance normalisation (`RevIN` of `paperzoo.timeseries.layers`, non-affine by default as in the released code's
  "std" scaler) and patching (patches of length P every S steps; the *oldest* `(L - P) mod S` steps are dropped so
  the most recent step is always in the last patch, as in the released code);
- `MixerBlock`: LayerNorm (or BatchNorm) -> MLP along one axis -> gated attention (softmax gate ⊙ features) ->
  residual. A `MixerLayer` stacks the paper's three mixers on hidden states [B, C, N, D]:
  the channel mixer (mixes C; "mix_channel" mode only), the inter-patch mixer (mixes N) and the intra-patch mixer
  (mixes the D hidden features of each patch);
- modes: "common_channel" (channel-independent backbone, CI-TSMixer), "mix_channel" (channel mixer in every layer,
  IC-TSMixer) and "hybrid" (the paper's hybrid channel modelling: a channel-independent backbone plus the
  cross-channel reconciliation head);
- the two online reconciliation heads:
  (1) `CrossChannelReconciliationHead`: each forecast point (t, c) is refined from the base forecasts of *all*
      channels at times t-k..t+k (zero-padded at the ends): the (2k+1)·C window is flattened, gated, mapped by a
      linear layer to the C channels and added to the base forecast (residual);
  (2) `HierarchyReconciliationHead`: from the backbone embedding, predict the forecast aggregated over consecutive
      windows of `aggregation_length` steps (the coarse level of the hierarchy), concatenate it with the fine base
      forecast and map both by a linear layer to the reconciled fine forecast. Its loss (`hierarchy_loss`) adds
      MSE(aggregate(Y), Ĥ) and the coherence term MSE(aggregate(Ŷ), Ĥ) to MSE(Y, Ŷ);
- `TSMixerPretrainer`: masked self-supervised pretraining: random patch masking (a fixed count per series,
  `N - int(N (1 - ratio))`, optionally the same patches for every channel), masked patches set to 0 before the
  embedding, a linear head reconstructs every patch, MSE over the masked patches only. Its `backbone` (+ `revin`)
  loads into a `TSMixer` for fine-tuning (`load_backbone`).

Known deviations / choices (the paper leaves them open or the released code differs):

- Gate position: the paper applies the gate to each mixer's MLP output; the released code does so for the patch
  and feature mixers but gates the *input* of the channel mixer's MLP. Ours gates outputs everywhere by default;
  `channel_gate_before_mlp=True` reproduces the released code (the porting functions set it).
- Hierarchy head: aggregates are *means* over each window by default (`hierarchy_aggregation="mean"`) so both loss
  terms have the same scale; "sum" gives the paper's sums (the same hierarchy up to a fixed factor). A horizon that
  is not a multiple of the aggregation length has a shorter last window. The coherence term follows our reading of
  the paper's hierarchy loss; its weight is a parameter of the task. The paper's exact layer sizes are not public in
  code (the released PatchTSMixer has neither reconciliation head).
- Cross-channel head: the released code of TTM (`ForecastChannelHeadMixer`, the same head reused) zero-pads and adds
  the residual; we do the same. Reconciliation heads run on the normalised forecast, before RevIN is inverted.
- Not implemented (also optional in the released code, off by default): tiny self-attention across patches,
  positional encodings, distribution (NLL) heads, forecast masking.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.timeseries.layers import InstanceStats, RevIN, patchify

Mode = Literal["common_channel", "mix_channel", "hybrid"]
Norm = Literal["LayerNorm", "BatchNorm"]
MODES = ("common_channel", "mix_channel", "hybrid")


def linear_along(x: torch.Tensor, linear: nn.Linear, dim: int) -> torch.Tensor:
    """Apply `linear` along axis `dim` of `x`: `linear(x.movedim(dim, -1)).movedim(-1, dim)`."""
    if dim % x.dim() == x.dim() - 1:
        return linear(x)
    return linear(x.movedim(dim, -1)).movedim(-1, dim)


class GatedAttention(nn.Module):
    """The paper's gated attention: x ⊙ softmax(W x + b) along one axis.

    Args:
        size: the length of the gated axis.
        dim: the axis the gate is computed along (and softmax-normalised over).

    Shapes:
        x [..., size, ...] -> same shape.
    """

    def __init__(self, size: int, dim: int = -1):
        super().__init__()
        self.proj = nn.Linear(size, size)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.softmax(linear_along(x, self.proj, self.dim), dim=self.dim)


class MixerMLP(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, along axis `dim` (hidden width `expansion_factor` x size)."""

    def __init__(self, size: int, expansion_factor: int, dropout: float, dim: int = -1):
        super().__init__()
        self.fc1 = nn.Linear(size, size * expansion_factor)
        self.fc2 = nn.Linear(size * expansion_factor, size)
        self.dropout = nn.Dropout(dropout)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.gelu(linear_along(x, self.fc1, self.dim)))
        return self.dropout(linear_along(x, self.fc2, self.dim))


class HiddenNorm(nn.Module):
    """LayerNorm or BatchNorm over the hidden features D of [B, C, N, D] (BatchNorm: statistics over B, C, N)."""

    def __init__(self, d_model: int, norm: Norm = "LayerNorm", eps: float = 1e-5):
        super().__init__()
        require(norm in ("LayerNorm", "BatchNorm"), f"norm must be 'LayerNorm' or 'BatchNorm', got {norm!r}")
        self.kind = norm
        self.norm: nn.Module = nn.LayerNorm(d_model, eps=eps) if norm == "LayerNorm" else nn.BatchNorm1d(d_model, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "LayerNorm":
            return self.norm(x)
        return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class MixerBlock(nn.Module):
    """norm -> MLP along `dim` -> gated attention along `dim` -> + residual.

    Args:
        size: length of the mixed axis (C for the channel mixer, N for the inter-patch mixer, D intra-patch).
        dim: the mixed axis of the hidden states [B, C, N, D]: 1, 2 or 3.
        d_model: D, normalised over in every block (as in the released code).
        gate_before_mlp: gate the MLP's input instead of its output (the released code's channel mixer).
    """

    def __init__(
        self,
        size: int,
        dim: int,
        d_model: int,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        norm_eps: float = 1e-5,
        gate_before_mlp: bool = False,
    ):
        super().__init__()
        self.norm = HiddenNorm(d_model, norm, norm_eps)
        self.mlp = MixerMLP(size, expansion_factor, dropout)  # applied with the mixed axis moved last
        self.gate = GatedAttention(size) if gated_attn else None
        self.gate_before_mlp, self.dim = gate_before_mlp, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, N, D]
        # the mixed axis is moved last once for the MLP and the gate (one transposed copy, as in the reference)
        h = self.norm(x).movedim(self.dim, -1)
        if self.gate is not None and self.gate_before_mlp:
            h = self.gate(h)
        h = self.mlp(h)
        if self.gate is not None and not self.gate_before_mlp:
            h = self.gate(h)
        return h.movedim(-1, self.dim) + x


class MixerLayer(nn.Module):
    """One TSMixer layer: [channel mixer] -> inter-patch mixer -> intra-patch mixer, on [B, C, N, D]."""

    def __init__(
        self,
        num_channels: int,
        num_patches: int,
        d_model: int,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        mix_channels: bool = False,
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        norm_eps: float = 1e-5,
        channel_gate_before_mlp: bool = False,
    ):
        super().__init__()
        common = dict(
            d_model=d_model,
            expansion_factor=expansion_factor,
            dropout=dropout,
            gated_attn=gated_attn,
            norm=norm,
            norm_eps=norm_eps,
        )
        self.channel_mixer = (
            MixerBlock(num_channels, 1, gate_before_mlp=channel_gate_before_mlp, **common) if mix_channels else None
        )
        self.patch_mixer = MixerBlock(num_patches, 2, **common)  # inter-patch: mixes N
        self.feature_mixer = MixerBlock(d_model, 3, **common)  # intra-patch: mixes the hidden features D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_mixer is not None:
            x = self.channel_mixer(x)
        return self.feature_mixer(self.patch_mixer(x))


class TSMixerBackbone(nn.Module):
    """Patch embedding (linear P -> D) and the stack of mixer layers; what pretraining transfers.

    Shapes:
        patches [B, C, N, P] -> hidden states [B, C, N, D]
    """

    def __init__(
        self,
        num_channels: int,
        num_patches: int,
        patch_length: int,
        d_model: int = 16,
        num_layers: int = 3,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        mix_channels: bool = False,
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        norm_eps: float = 1e-5,
        channel_gate_before_mlp: bool = False,
    ):
        super().__init__()
        self.embed = nn.Linear(patch_length, d_model)
        self.layers = nn.ModuleList(
            MixerLayer(
                num_channels,
                num_patches,
                d_model,
                expansion_factor,
                dropout,
                mix_channels,
                gated_attn,
                norm,
                norm_eps,
                channel_gate_before_mlp,
            )
            for _ in range(num_layers)
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        h = self.embed(patches)  # [B, C, N, D]
        for layer in self.layers:
            h = layer(h)
        return h


class ForecastHead(nn.Module):
    """Flatten each channel's N x D embedding, dropout, linear to `out` steps. [B, C, N, D] -> [B, C, out]"""

    def __init__(self, num_patches: int, d_model: int, out: int, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(num_patches * d_model, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(h.flatten(-2)))


def aggregation_windows(prediction_length: int, aggregation_length: int) -> torch.Tensor:
    """The [K, H] 0/1 matrix summing consecutive windows of `aggregation_length` steps (the last may be shorter)."""
    require(aggregation_length > 0, f"aggregation_length must be positive, got {aggregation_length}")
    k = math.ceil(prediction_length / aggregation_length)
    window = torch.arange(prediction_length) // aggregation_length  # [H]
    return (window[None, :] == torch.arange(k)[:, None]).float()  # [K, H]


def aggregate(series: torch.Tensor, aggregation_length: int, how: str = "mean") -> torch.Tensor:
    """Aggregate [B, H, C] over consecutive windows of `aggregation_length` steps -> [B, K, C] (sum or mean)."""
    require(how in ("mean", "sum"), f"hierarchy aggregation must be 'mean' or 'sum', got {how!r}")
    windows = aggregation_windows(series.shape[1], aggregation_length).to(series)  # [K, H]
    if how == "mean":
        windows = windows / windows.sum(dim=1, keepdim=True)
    return torch.einsum("kh,bhc->bkc", windows, series)


class HierarchyReconciliationHead(nn.Module):
    """The patch-aggregated hierarchy head.

    From the flattened backbone embedding of each channel it predicts the base forecast Ŷ (H steps) and the
    aggregated forecast Ĥ (K = ceil(H / aggregation_length) window *means*); a linear layer maps [Ŷ, Ĥ] to the
    reconciled forecast.

    Shapes:
        h [B, C, N, D] -> (reconciled [B, C, H], aggregate means [B, C, K])
    """

    def __init__(
        self, num_patches: int, d_model: int, prediction_length: int, aggregation_length: int, dropout: float = 0.2
    ):
        super().__init__()
        self.aggregation_length = aggregation_length
        self.num_aggregates = math.ceil(prediction_length / aggregation_length)
        self.base = ForecastHead(num_patches, d_model, prediction_length, dropout)
        self.aggregate = ForecastHead(num_patches, d_model, self.num_aggregates, dropout)
        self.reconcile = nn.Linear(prediction_length + self.num_aggregates, prediction_length)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base, coarse = self.base(h), self.aggregate(h)  # [B, C, H], [B, C, K]
        return self.reconcile(torch.cat([base, coarse], dim=-1)), coarse


class CrossChannelReconciliationHead(nn.Module):
    """The cross-channel forecast reconciliation head (the channel-mixing head of hybrid channel modelling).

    For each horizon step t, the base forecasts of all C channels at steps t-k..t+k (zeros beyond the horizon) are
    flattened to (2k+1)·C values (channel-major), gated, and mapped by a linear layer to a correction of the C
    forecasts at t; the correction is added to the base forecast.

    Args:
        num_channels: C.
        context: k, the number of neighbouring steps on each side.
        gated_attn: gate the flattened window.

    Shapes:
        forecast [B, H, C] -> [B, H, C]
    """

    def __init__(self, num_channels: int, context: int = 1, gated_attn: bool = True):
        super().__init__()
        require(context >= 0, f"channel_context must be >= 0, got {context}")
        self.context = context
        width = num_channels * (2 * context + 1)
        self.gate = GatedAttention(width) if gated_attn else None
        self.linear = nn.Linear(width, num_channels)

    def windows(self, forecast: torch.Tensor) -> torch.Tensor:
        """[B, H, C] -> the flattened neighbourhood of every step, [B, H, C * (2k + 1)] (channel-major)."""
        padded = F.pad(forecast, (0, 0, self.context, self.context))  # [B, H + 2k, C]
        return padded.unfold(1, 2 * self.context + 1, 1).flatten(-2)  # [B, H, C, 2k+1] -> [B, H, C(2k+1)]

    def forward(self, forecast: torch.Tensor) -> torch.Tensor:
        x = self.windows(forecast)
        if self.gate is not None:
            x = self.gate(x)
        return forecast + self.linear(x)


class TSMixerOutput(NamedTuple):
    forecast: torch.Tensor  # [B, H, C], in the input's units
    aggregate: torch.Tensor | None  # [B, K, C] hierarchy head's aggregates (input units), or None


def patch_input(x: torch.Tensor, patch_length: int, patch_stride: int) -> torch.Tensor:
    """[B, L, C] -> [B, C, N, P]; drops the oldest (L - P) mod S steps so the newest step is in the last patch."""
    start = (x.shape[1] - patch_length) % patch_stride
    return patchify(x[:, start:], patch_length, patch_stride, pad_end=False)


def count_patches(context_length: int, patch_length: int, patch_stride: int) -> int:
    require(
        patch_length > 0 and patch_stride > 0, f"patch_length/stride must be > 0, got {patch_length}/{patch_stride}"
    )
    require(
        context_length >= patch_length,
        f"context_length {context_length} is shorter than patch_length {patch_length}; expected at least that",
    )
    return (context_length - patch_length) // patch_stride + 1


class TSMixer(nn.Module):
    """TSMixer forecaster: RevIN -> patching -> mixer backbone -> forecast head(s) -> inverse RevIN.

    Args:
        num_channels: C.
        context_length: L.
        prediction_length: H.
        patch_length: P.
        patch_stride: S (= P for non-overlapping patches).
        d_model: D, the hidden size of each patch.
        num_layers: number of mixer layers.
        expansion_factor: MLP hidden width / input width.
        dropout: dropout inside the mixers.
        head_dropout: dropout before the head's linear layers.
        mode: "common_channel", "mix_channel" or "hybrid" (common_channel backbone + cross-channel head).
        gated_attn: gated attention after every mixer MLP.
        norm: "LayerNorm" or "BatchNorm" in the mixer blocks.
        norm_eps: epsilon of those norms.
        revin: instance-normalise each window (and invert on the forecast).
        revin_affine: learnable per-channel affine map in RevIN.
        hierarchy_head: add the patch-aggregated hierarchy reconciliation head.
        aggregation_length: window of the hierarchy's coarse level (default: `patch_length`).
        hierarchy_aggregation: "mean" or "sum" for the coarse level.
        channel_context: k of the cross-channel reconciliation head; None disables it (except in "hybrid" mode,
            where None means k = 1).
        channel_gate_before_mlp: gate the channel mixer's input (the released code's order).

    Shapes:
        past [B, L, C] -> forecast [B, H, C]
    """

    def __init__(
        self,
        num_channels: int,
        context_length: int,
        prediction_length: int,
        patch_length: int = 8,
        patch_stride: int = 8,
        d_model: int = 16,
        num_layers: int = 3,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        head_dropout: float = 0.2,
        mode: Mode = "common_channel",
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        norm_eps: float = 1e-5,
        revin: bool = True,
        revin_affine: bool = False,
        hierarchy_head: bool = False,
        aggregation_length: int | None = None,
        hierarchy_aggregation: Literal["mean", "sum"] = "mean",
        channel_context: int | None = None,
        channel_gate_before_mlp: bool = False,
    ):
        super().__init__()
        require(mode in MODES, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        require(num_channels > 0, f"num_channels must be positive, got {num_channels}")
        require(prediction_length > 0, f"prediction_length must be positive, got {prediction_length}")
        require(
            hierarchy_aggregation in ("mean", "sum"),
            f"hierarchy_aggregation must be 'mean' or 'sum', got {hierarchy_aggregation!r}",
        )
        self.num_channels, self.context_length, self.prediction_length = num_channels, context_length, prediction_length
        self.patch_length, self.patch_stride = patch_length, patch_stride
        self.num_patches = count_patches(context_length, patch_length, patch_stride)
        self.mode = mode
        self.revin = RevIN(num_channels, affine=revin_affine, eps=1e-5) if revin else None
        self.backbone = TSMixerBackbone(
            num_channels,
            self.num_patches,
            patch_length,
            d_model,
            num_layers,
            expansion_factor,
            dropout,
            mix_channels=mode == "mix_channel",
            gated_attn=gated_attn,
            norm=norm,
            norm_eps=norm_eps,
            channel_gate_before_mlp=channel_gate_before_mlp,
        )
        self.hierarchy_aggregation = hierarchy_aggregation
        if hierarchy_head:
            self.head: nn.Module = HierarchyReconciliationHead(
                self.num_patches, d_model, prediction_length, aggregation_length or patch_length, head_dropout
            )
        else:
            self.head = ForecastHead(self.num_patches, d_model, prediction_length, head_dropout)
        if mode == "hybrid" and channel_context is None:
            channel_context = 1
        self.channel_head = (
            CrossChannelReconciliationHead(num_channels, channel_context, gated_attn)
            if channel_context is not None
            else None
        )

    @property
    def has_hierarchy_head(self) -> bool:
        return isinstance(self.head, HierarchyReconciliationHead)

    def _check(self, past: torch.Tensor) -> None:
        require(
            past.dim() == 3 and past.shape[1] == self.context_length and past.shape[2] == self.num_channels,
            f"TSMixer expects past [batch, {self.context_length}, {self.num_channels}], got {tuple(past.shape)}",
        )

    def predict(self, past: torch.Tensor) -> TSMixerOutput:
        """The forecast and, with the hierarchy head, its aggregates (both in the input's units)."""
        self._check(past)
        stats: InstanceStats | None = None
        if self.revin is not None:
            past, stats = self.revin.normalize(past)
        h = self.backbone(patch_input(past, self.patch_length, self.patch_stride))  # [B, C, N, D]
        coarse = None
        if self.has_hierarchy_head:
            forecast, coarse = self.head(h)  # [B, C, H], [B, C, K]
            coarse = coarse.transpose(1, 2)  # [B, K, C] window means, normalised units
        else:
            forecast = self.head(h)
        forecast = forecast.transpose(1, 2)  # [B, H, C]
        if self.channel_head is not None:
            forecast = self.channel_head(forecast)
        if stats is not None:
            forecast = self.revin.denormalize(forecast, stats)  # type: ignore[union-attr]
            if coarse is not None:
                coarse = self.revin.denormalize(coarse, stats)  # affine per channel: commutes with the mean
        if coarse is not None and self.hierarchy_aggregation == "sum":
            counts = aggregation_windows(self.prediction_length, self.head.aggregation_length).sum(1).to(coarse)
            coarse = coarse * counts[None, :, None]
        return TSMixerOutput(forecast, coarse)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        return self.predict(past).forecast


def hierarchy_loss(
    output: TSMixerOutput,
    future: torch.Tensor,
    aggregation_length: int,
    how: str = "mean",
    coherence_weight: float = 1.0,
) -> torch.Tensor:
    """The hierarchy head's training loss: MSE(Y, Ŷ) + MSE(agg(Y), Ĥ) + coherence_weight * MSE(agg(Ŷ), Ĥ).

    Args:
        output: the model's `predict` output (with `aggregate`).
        future: Y. [B, H, C]
    """
    require(output.aggregate is not None, "hierarchy_loss needs a TSMixer built with hierarchy_head=True")
    assert output.aggregate is not None
    loss = F.mse_loss(output.forecast, future)
    loss = loss + F.mse_loss(output.aggregate, aggregate(future, aggregation_length, how))
    if coherence_weight:
        loss = loss + coherence_weight * F.mse_loss(
            aggregate(output.forecast, aggregation_length, how), output.aggregate
        )
    return loss


def random_patch_mask(
    batch: int, channels: int, num_patches: int, mask_ratio: float, channel_consistent: bool = True, generator=None
) -> torch.Tensor:
    """A boolean mask [B, C, N] with exactly `N - int(N * (1 - mask_ratio))` masked patches per series.

    With `channel_consistent`, every channel of a sample masks the same patches.
    """
    require(0.0 <= mask_ratio < 1.0, f"mask_ratio must be in [0, 1), got {mask_ratio}")
    keep = int(num_patches * (1 - mask_ratio))
    noise = torch.rand(batch, 1 if channel_consistent else channels, num_patches, generator=generator)
    ranks = noise.argsort(dim=-1).argsort(dim=-1)  # rank of each patch's noise
    return (ranks >= keep).expand(batch, channels, num_patches)


class TSMixerPretrainer(nn.Module):
    """Masked self-supervised pretraining of the TSMixer backbone.

    RevIN -> patching -> random patch masking (masked patches set to `mask_value`) -> backbone -> a linear head
    reconstructing each patch. The loss is the MSE between reconstruction and the (normalised) patches, averaged
    over the masked patches only.

    Args: as `TSMixer` for the backbone, plus
        mask_ratio: fraction of patches masked per series.
        channel_consistent_masking: mask the same patches in every channel of a sample.
        mask_value: the value written into masked patches.

    Shapes:
        past [B, L, C] -> loss [], reconstruction [B, C, N, P], target [B, C, N, P], mask [B, C, N]
    """

    def __init__(
        self,
        num_channels: int,
        context_length: int,
        patch_length: int = 8,
        patch_stride: int = 8,
        d_model: int = 16,
        num_layers: int = 3,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        head_dropout: float = 0.2,
        mode: Mode = "common_channel",
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        norm_eps: float = 1e-5,
        revin: bool = True,
        revin_affine: bool = False,
        mask_ratio: float = 0.4,
        channel_consistent_masking: bool = True,
        mask_value: float = 0.0,
        channel_gate_before_mlp: bool = False,
    ):
        super().__init__()
        require(mode in MODES, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        require(0.0 < mask_ratio < 1.0, f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.num_channels, self.context_length = num_channels, context_length
        self.patch_length, self.patch_stride = patch_length, patch_stride
        self.num_patches = count_patches(context_length, patch_length, patch_stride)
        self.mask_ratio, self.channel_consistent_masking, self.mask_value = (
            mask_ratio,
            channel_consistent_masking,
            mask_value,
        )
        self.revin = RevIN(num_channels, affine=revin_affine, eps=1e-5) if revin else None
        self.backbone = TSMixerBackbone(
            num_channels,
            self.num_patches,
            patch_length,
            d_model,
            num_layers,
            expansion_factor,
            dropout,
            mix_channels=mode == "mix_channel",
            gated_attn=gated_attn,
            norm=norm,
            norm_eps=norm_eps,
            channel_gate_before_mlp=channel_gate_before_mlp,
        )
        self.dropout = nn.Dropout(head_dropout)
        self.reconstruct = nn.Linear(d_model, patch_length)

    def forward(self, past: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Masked reconstruction; `mask` [B, C, N] (True = masked) overrides the random mask."""
        require(
            past.dim() == 3 and past.shape[1] == self.context_length and past.shape[2] == self.num_channels,
            f"TSMixerPretrainer expects past [batch, {self.context_length}, {self.num_channels}], "
            f"got {tuple(past.shape)}",
        )
        if self.revin is not None:
            past, _ = self.revin.normalize(past)
        patches = patch_input(past, self.patch_length, self.patch_stride)  # [B, C, N, P]
        if mask is None:
            mask = random_patch_mask(
                patches.shape[0], patches.shape[1], self.num_patches, self.mask_ratio, self.channel_consistent_masking
            ).to(patches.device)
        masked = patches.masked_fill(mask[..., None], self.mask_value)
        reconstruction = self.reconstruct(self.dropout(self.backbone(masked)))  # [B, C, N, P]
        return {
            "loss": masked_patch_loss(reconstruction, patches, mask),
            "reconstruction": reconstruction,
            "target": patches,
            "mask": mask,
        }


def masked_patch_loss(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE per patch (mean over its P steps), averaged over the masked patches only. mask [B, C, N] bool."""
    per_patch = (reconstruction - target).pow(2).mean(dim=-1)  # [B, C, N]
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)


def load_backbone(model: TSMixer, pretrained: TSMixerPretrainer | dict[str, torch.Tensor]) -> None:
    """Copy a pretrained backbone (and RevIN's affine parameters, if any) into `model` for fine-tuning.

    `pretrained` is a `TSMixerPretrainer` or its `state_dict`. Shapes must agree (same channels in "mix_channel"
    mode, same patching and sizes); a mismatch raises a ConfigError naming the parameter.
    """
    state = pretrained.state_dict() if isinstance(pretrained, nn.Module) else pretrained
    own = model.state_dict()
    transfer = {k: v for k, v in state.items() if k.startswith(("backbone.", "revin."))}
    require(
        any(k.startswith("backbone.") for k in transfer), "the pretrained state has no 'backbone.' parameters to load"
    )
    for key, value in transfer.items():
        require(key in own, f"pretrained parameter {key!r} has no counterpart in the forecaster; same mode expected")
        require(
            own[key].shape == value.shape,
            f"pretrained parameter {key!r} has shape {tuple(value.shape)}, "
            f"the forecaster expects {tuple(own[key].shape)}",
        )
    model.load_state_dict(transfer, strict=False)


def tsmixer_hybrid(num_channels: int, context_length: int, prediction_length: int, **kwargs) -> TSMixer:
    """The paper's best variant: channel-independent backbone, gated attention, both reconciliation heads."""
    kwargs.setdefault("channel_context", 1)
    return TSMixer(num_channels, context_length, prediction_length, mode="hybrid", hierarchy_head=True, **kwargs)
