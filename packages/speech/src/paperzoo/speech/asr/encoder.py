"""Speech encoders shared by Paraformer and its autoregressive and CTC baselines: SAN-M and a conformer.

SAN-M is from "SAN-M: Memory Equipped Self-Attention for End-to-End Speech Recognition" (Gao et al., Interspeech
2020, https://arxiv.org/abs/2006.01713), the encoder of "Paraformer: Fast and Accurate Parallel Transformer for
Non-autoregressive End-to-End Speech Recognition" (Gao et al., 2022, https://arxiv.org/abs/2206.08317). As in
FunASR's `SANMEncoder` / `MultiHeadedAttentionSANM` (`funasr/models/sanm/`, read for facts, not copied):
- one fused projection gives queries, keys and values; the **memory block** (an FSMN) is a depthwise 1-D
  convolution without bias (kernel 11 in Paraformer's configs, zero padding (k-1)/2 + shift on the left and the rest
  on the right) over the value projection V (padded frames zeroed first), plus V itself; its output (dropout, padded
  frames zeroed) is **added to the attention output** after the output projection: SANM(x) = Wo Attn(Q, K, V) +
  FSMN(V) + V;
- pre-norm layers (LayerNorm); the first layer maps the input width F to D and has no residual (F != D);
- the input (the LFR features) is scaled by sqrt(D) and gets FunASR's sinusoidal position encoding (positions from 1)
  of width F ("input_layer: pe": no convolutional subsampling, LFR already gives 60 ms frames); a final LayerNorm.
Deviations: no stochastic depth, no LoRA, no streaming/chunk masks; padded output frames are set to 0.

`ConformerEncoder` wraps torchaudio's `Conformer` ("Conformer: Convolution-augmented Transformer for Speech
Recognition", Gulati et al., 2020, https://arxiv.org/abs/2005.08100) behind a linear input projection. Deviations:
torchaudio's self-attention has no relative positions, so an absolute sinusoidal encoding is added after the
projection; its convolution module does not mask padding, so a forward pre-hook zeroes the padded frames entering
each depthwise convolution (in training, BatchNorm's batch statistics still include padded frames; in eval mode
batched and one-by-one outputs agree).

Shapes: B = batch, T = frames, F = input features, D = model width.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import Conformer

from paperzoo.core.errors import ConfigError, require
from paperzoo.speech.asr.layers import FeedForward, attention_mask, lengths_to_mask, sinusoidal_encoding


class SANMAttention(nn.Module):
    """Self-attention with the FSMN memory block: Wo Attn(Q, K, V) + FSMN(V) + V.

    Args:
        input_dim: width of the input (F for the first layer, else D).
        dim: D, the width of Q, K, V and the output.
        num_heads: H.
        kernel_size: the memory block's kernel (11 in Paraformer).
        shift: extra left context of the memory block (FunASR's `sanm_shfit`; 0 = centred).
        dropout: attention-probability dropout, also applied to the memory (as FunASR does).
    """

    def __init__(
        self, input_dim: int, dim: int, num_heads: int, kernel_size: int = 11, shift: int = 0, dropout: float = 0.0
    ):
        super().__init__()
        require(num_heads > 0 and dim % num_heads == 0, f"model width {dim} must divide into {num_heads} heads")
        require(kernel_size >= 1, f"the memory block's kernel size must be >= 1, got {kernel_size}")
        require(0 <= shift < kernel_size, f"the memory block's shift must be in [0, {kernel_size}), got {shift}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(input_dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.fsmn = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        left = (kernel_size - 1) // 2 + shift
        self.padding = (left, kernel_size - 1 - left)
        self.dropout = dropout

    def memory(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The FSMN memory block: values [B, T, D] (mask [B, T] True = valid) -> FSMN(V) + V, padding zeroed."""
        values = values * mask[..., None]
        memory = self.fsmn(F.pad(values.transpose(1, 2), self.padding)).transpose(1, 2)  # [B, T, D]
        memory = F.dropout(memory + values, self.dropout, self.training)
        return memory * mask[..., None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, input_dim], mask [B, T] (True = valid) -> [B, T, D]."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, T, D] each
        heads = (t.view(batch, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        y = F.scaled_dot_product_attention(
            *heads,
            attn_mask=attention_mask(length, mask, causal=False),
            dropout_p=self.dropout if self.training else 0.0,
        )  # [B, H, T, Dh]
        y = self.out(y.transpose(1, 2).reshape(batch, length, -1))
        return y + self.memory(v, mask)


class SANMLayer(nn.Module):
    """A pre-norm SAN-M block: x + Drop(SANM(LN(x))) (no residual when the width changes), then x + Drop(FFN(LN(x)))."""

    def __init__(
        self,
        input_dim: int,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        kernel_size: int = 11,
        shift: int = 0,
    ):
        super().__init__()
        self.residual = input_dim == dim
        self.attn_norm = nn.LayerNorm(input_dim)
        self.attn = SANMAttention(input_dim, dim, num_heads, kernel_size, shift, attention_dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, input_dim], mask [B, T] -> [B, T, D]."""
        y = self.dropout(self.attn(self.attn_norm(x), mask))
        x = x + y if self.residual else y
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class SANMEncoder(nn.Module):
    """The SAN-M encoder (see the module docstring).

    Args:
        input_dim: F, the feature width (80 x 7 = 560 with LFR).
        d_model: D.
        num_heads: H.
        num_layers: SAN-M blocks (the first maps F to D).
        ffn_dim: the feed-forward hidden width.
        dropout: dropout after each sub-block and inside the feed-forward.
        attention_dropout: dropout of attention probabilities and of the memory block.
        kernel_size: the memory block's kernel (11 in Paraformer).
        shift: the memory block's extra left context (0 in Paraformer).
    """

    def __init__(
        self,
        input_dim: int,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 6,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        kernel_size: int = 11,
        shift: int = 0,
    ):
        super().__init__()
        require(num_layers >= 1, f"the SAN-M encoder needs at least one layer, got {num_layers}")
        require(input_dim % 2 == 0, f"SAN-M's position encoding needs an even input width, got {input_dim}")
        self.input_dim, self.output_dim = input_dim, d_model
        self.layers = nn.ModuleList(
            SANMLayer(
                input_dim if i == 0 else d_model,
                d_model,
                num_heads,
                ffn_dim,
                dropout,
                attention_dropout,
                kernel_size,
                shift,
            )
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, F], lengths [B] -> (h [B, T, D] with padded frames 0, lengths [B])."""
        mask = lengths_to_mask(lengths, x.shape[1])  # [B, T]
        x = x * math.sqrt(self.output_dim) + sinusoidal_encoding(x.shape[1], x.shape[2], device=x.device)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) * mask[..., None], lengths


class ConformerEncoder(nn.Module):
    """torchaudio's `Conformer` behind Linear(F -> D) + sinusoidal positions (see the module docstring).

    Args:
        input_dim: F.
        d_model: D.
        num_heads: H.
        num_layers: conformer blocks.
        ffn_dim: the feed-forward hidden width.
        dropout: dropout everywhere inside torchaudio's blocks and after the input projection.
        kernel_size: the depthwise convolution's kernel (odd).
        use_group_norm: GroupNorm instead of BatchNorm in the convolution module.
    """

    def __init__(
        self,
        input_dim: int,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 6,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        kernel_size: int = 15,
        use_group_norm: bool = False,
    ):
        super().__init__()
        require(kernel_size % 2 == 1, f"the conformer's depthwise kernel size must be odd, got {kernel_size}")
        require(num_heads > 0 and d_model % num_heads == 0, f"model width {d_model} must divide into {num_heads} heads")
        self.input_dim, self.output_dim = input_dim, d_model
        self.projection = nn.Linear(input_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.conformer = Conformer(
            input_dim=d_model,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            depthwise_conv_kernel_size=kernel_size,
            dropout=dropout,
            use_group_norm=use_group_norm,
        )
        # torchaudio's convolution module does not mask padding: zero the padded frames entering each depthwise
        # convolution, so they cannot leak into the last valid frames of a shorter utterance
        self._frame_mask: torch.Tensor | None = None
        for module in self.conformer.modules():
            if isinstance(module, nn.Conv1d) and module.groups == module.in_channels > 1:
                module.register_forward_pre_hook(self._zero_padding)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, F], lengths [B] -> (h [B, T, D] with padded frames 0, lengths [B])."""
        mask = lengths_to_mask(lengths, x.shape[1])  # [B, T]
        x = self.projection(x) + sinusoidal_encoding(x.shape[1], self.output_dim, device=x.device)
        self._frame_mask = mask
        try:
            h, lengths = self.conformer(self.dropout(x) * mask[..., None], lengths)
        finally:
            self._frame_mask = None
        return h * mask[..., None], lengths

    def _zero_padding(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        """Forward pre-hook of each depthwise convolution: its input [B, D, T] with padded frames set to 0."""
        if self._frame_mask is None:
            return None
        return (args[0] * self._frame_mask[:, None, : args[0].shape[-1]].to(args[0].dtype),)


ENCODERS = {"sanm": SANMEncoder, "conformer": ConformerEncoder}


def build_encoder(
    kind: str,
    input_dim: int,
    d_model: int = 256,
    num_heads: int = 4,
    num_layers: int = 6,
    ffn_dim: int = 1024,
    dropout: float = 0.1,
    attention_dropout: float = 0.0,
    kernel_size: int | None = None,
    sanm_shift: int = 0,
) -> SANMEncoder | ConformerEncoder:
    """An encoder by name: "sanm" or "conformer". Both map (x [B, T, F], lengths [B]) to (h [B, T, D], lengths)
    and expose `output_dim` = D.

    Args:
        kind: "sanm" or "conformer".
        input_dim, d_model, num_heads, num_layers, ffn_dim, dropout: see the encoders.
        attention_dropout: SAN-M only (torchaudio's conformer uses `dropout` everywhere).
        kernel_size: SAN-M's memory-block kernel (default 11) or the conformer's depthwise kernel (default 15).
        sanm_shift: SAN-M's memory-block shift (default 0).
    """
    if kind == "sanm":
        return SANMEncoder(
            input_dim,
            d_model,
            num_heads,
            num_layers,
            ffn_dim,
            dropout,
            attention_dropout,
            kernel_size=11 if kernel_size is None else kernel_size,
            shift=sanm_shift,
        )
    if kind == "conformer":
        return ConformerEncoder(
            input_dim,
            d_model,
            num_heads,
            num_layers,
            ffn_dim,
            dropout,
            kernel_size=15 if kernel_size is None else kernel_size,
        )
    raise ConfigError(f"unknown encoder kind {kind!r}; expected one of {sorted(ENCODERS)}")
