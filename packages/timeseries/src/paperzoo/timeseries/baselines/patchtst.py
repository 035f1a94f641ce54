"""PatchTST (supervised): patches of each channel as tokens of a transformer encoder, with a flatten head.

Nie, Nguyen, Sinthong & Kalagnanam, "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers",
ICLR 2023, https://arxiv.org/abs/2211.14730. Reference code: https://github.com/yuqinie98/PatchTST
(PatchTST_supervised/layers/PatchTST_backbone.py).

Implemented as in the paper and its reference code:
- RevIN per window and channel (optional learnable affine), undone on the forecast (`paperzoo.timeseries.layers`);
- patching: the window is padded at the end with S copies of its last value, then cut into N = floor((L-P)/S) + 2
  patches of length P every S steps;
- channel independence: every channel is a separate sequence through the same backbone (B*C sequences);
- a linear patch embedding P -> D plus a learnable positional embedding (init U(-0.02, 0.02)), then dropout;
- a vanilla transformer encoder with BatchNorm instead of LayerNorm (the paper, Sec. 3.1 and appendix A.1.4, after
  Zerveas et al.), post-norm, a GELU feed-forward, and the reference's residual attention (each layer adds the
  previous layer's pre-softmax scores to its own; `residual_attention=False` gives plain attention). It is written
  out because `torch.nn.TransformerEncoderLayer` only has LayerNorm;
- the flatten head: the encoder output of a channel, [D, N], flattened and mapped linearly to H.

For the paper's ablations (and the claim check), the same class builds the point-token transformer
(`patch_length=1, patch_stride=1`) and a channel-mixing variant (`channel_independent=False`: one token per time
patch, embedding the patches of all channels together, and a head to H * C), both with everything else unchanged.
"""

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.timeseries.layers import RevIN, num_patches, patchify
from paperzoo.timeseries.task import ForecastingTask


class BatchNormTokens(nn.Module):
    """BatchNorm1d over the feature dimension of token sequences. [B, N, D] -> [B, N, D]"""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ResidualAttention(nn.Module):
    """Multi-head self-attention that also returns its pre-softmax scores and can add the previous layer's.

    Shapes:
        x [B, N, D], previous scores [B, heads, N, N] or None -> ([B, N, D], scores [B, heads, N, N])
    """

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        require(d_model % n_heads == 0, f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.out = nn.Sequential(nn.Linear(d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5  # [B, heads, N, N]
        if previous is not None:
            scores = scores + previous
        weights = self.attention_dropout(scores.softmax(dim=-1))
        mixed = (weights @ v).transpose(1, 2).reshape(batch, tokens, -1)  # [B, N, D]
        return self.out(mixed), scores


class PatchTSTEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer with BatchNorm and a GELU feed-forward. [B, N, D] -> [B, N, D]"""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.attention = ResidualAttention(d_model, n_heads, attention_dropout, dropout)
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_norm = BatchNormTokens(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.feed_forward_dropout = nn.Dropout(dropout)
        self.feed_forward_norm = BatchNormTokens(d_model)

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        attended, scores = self.attention(x, previous)
        x = self.attention_norm(x + self.attention_dropout(attended))
        x = self.feed_forward_norm(x + self.feed_forward_dropout(self.feed_forward(x)))
        return x, scores


class PatchTST(nn.Module):
    """PatchTST/supervised with a flatten head.

    Args:
        context_length: L.
        prediction_length: H.
        num_channels: C.
        patch_length: P (16 in the paper).
        patch_stride: S (8 in the paper).
        d_model: D, the token width (the paper uses 16 for small datasets, 128 for large ones).
        n_heads: attention heads.
        n_layers: encoder layers (3 in the paper).
        d_ff: feed-forward width.
        dropout: dropout after the embedding, in the feed-forward and on the residual branches.
        head_dropout: dropout on the forecast of the flatten head (0 in the paper's scripts).
        attention_dropout: dropout on the attention weights (0 in the paper's scripts).
        revin: reversible instance normalisation of each window.
        revin_affine: RevIN's learnable per-channel affine map.
        residual_attention: add the previous layer's attention scores (the reference's default).
        channel_independent: one sequence per channel (PatchTST); False embeds all channels' patches together.
        pad_end: pad S copies of the last value before patching (the paper's choice).

    Shapes:
        past [B, L, C] -> forecast [B, H, C]
    """

    def __init__(
        self,
        context_length: int,
        prediction_length: int,
        num_channels: int,
        patch_length: int = 16,
        patch_stride: int = 8,
        d_model: int = 16,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 128,
        dropout: float = 0.2,
        head_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        revin: bool = True,
        revin_affine: bool = True,
        residual_attention: bool = True,
        channel_independent: bool = True,
        pad_end: bool = True,
    ):
        super().__init__()
        require(prediction_length > 0, f"prediction_length must be positive, got {prediction_length}")
        require(num_channels > 0, f"num_channels must be positive, got {num_channels}")
        require(n_layers > 0, f"n_layers must be positive, got {n_layers}")
        require(
            0 <= dropout < 1 and 0 <= head_dropout < 1, f"dropouts must be in [0, 1), got {dropout} and {head_dropout}"
        )
        self.context_length, self.prediction_length, self.num_channels = context_length, prediction_length, num_channels
        self.patch_length, self.patch_stride, self.pad_end = patch_length, patch_stride, pad_end
        self.channel_independent, self.residual_attention = channel_independent, residual_attention
        self.num_patches = num_patches(context_length, patch_length, patch_stride, pad_end)
        self.revin = RevIN(num_channels, affine=revin_affine) if revin else None
        channels_per_token = 1 if channel_independent else num_channels
        self.embedding = nn.Linear(patch_length * channels_per_token, d_model)
        self.position = nn.Parameter(torch.empty(self.num_patches, d_model).uniform_(-0.02, 0.02))  # [N, D]
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            PatchTSTEncoderLayer(d_model, n_heads, d_ff, dropout, attention_dropout) for _ in range(n_layers)
        )
        self.head = nn.Linear(d_model * self.num_patches, prediction_length * channels_per_token)
        self.head_dropout = nn.Dropout(head_dropout)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        batch, context_length, channels = past.shape
        require(
            context_length == self.context_length and channels == self.num_channels,
            f"PatchTST was built for windows of {self.context_length} steps x {self.num_channels} channels, got "
            f"{context_length} x {channels}",
        )
        stats = None
        if self.revin is not None:
            past, stats = self.revin.normalize(past)  # [B, L, C]
        patches = patchify(past, self.patch_length, self.patch_stride, self.pad_end)  # [B, C, N, P]
        if self.channel_independent:
            tokens = patches.reshape(batch * channels, self.num_patches, self.patch_length)  # [B*C, N, P]
        else:
            tokens = patches.permute(0, 2, 1, 3).reshape(batch, self.num_patches, -1)  # [B, N, C*P]
        x = self.dropout(self.embedding(tokens) + self.position)  # [B', N, D]
        scores = None
        for layer in self.layers:
            x, new_scores = layer(x, scores)
            scores = new_scores if self.residual_attention else None
        # flatten head, D-major as in the reference ([B', D, N] flattened)
        forecast = self.head_dropout(self.head(x.transpose(1, 2).flatten(1)))  # [B', H * (1 or C)]
        if self.channel_independent:
            forecast = forecast.view(batch, channels, self.prediction_length).transpose(1, 2)  # [B, H, C]
        else:
            forecast = forecast.view(batch, self.prediction_length, channels)  # [B, H, C]
        if stats is not None:
            forecast = self.revin.denormalize(forecast, stats)  # type: ignore[union-attr]
        return forecast


class PatchTSTTask(ForecastingTask):
    """PatchTST trained with the MSE loss (the paper's supervised setting).

    Args:
        num_channels, context_length, prediction_length: linked from the datamodule.
        patch_length ... channel_independent: see `PatchTST`.
        optimizer, lr_scheduler: see `BaseTask` (the reference trains with Adam, lr 1e-4 to 2.5e-3, one-cycle).
    """

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 96,
        prediction_length: int = 24,
        patch_length: int = 16,
        patch_stride: int = 8,
        d_model: int = 16,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 128,
        dropout: float = 0.2,
        head_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        revin: bool = True,
        revin_affine: bool = True,
        residual_attention: bool = True,
        channel_independent: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(num_channels, context_length, prediction_length, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = PatchTST(
            context_length,
            prediction_length,
            num_channels,
            patch_length=patch_length,
            patch_stride=patch_stride,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            d_ff=d_ff,
            dropout=dropout,
            head_dropout=head_dropout,
            attention_dropout=attention_dropout,
            revin=revin,
            revin_affine=revin_affine,
            residual_attention=residual_attention,
            channel_independent=channel_independent,
        )
