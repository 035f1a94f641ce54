"""Primitives shared by the speech encoders and decoders: length masks, FunASR's sinusoidal position encoding,
multi-head attention through `F.scaled_dot_product_attention` and the position-wise feed-forward.

Shapes: B = batch, T = frames (keys), N = tokens (queries), D = model width, H = heads, Dh = D / H.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require


def lengths_to_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """[B] lengths -> [B, L] bool, True at valid (non-padded) positions."""
    max_length = int(lengths.max()) if max_length is None else max_length
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def sinusoidal_encoding(length: int, dim: int, offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """FunASR's `SinusoidalPositionEncoder` table: positions start at 1 (plus `offset`), the first D/2 channels are
    sin(p * w_i) and the last D/2 cos(p * w_i), w_i = 10000^(-i / (D/2 - 1)). Returns [length, dim]."""
    require(dim % 2 == 0 and dim >= 4, f"sinusoidal encoding needs an even width >= 4, got {dim}")
    positions = torch.arange(offset + 1, offset + length + 1, device=device, dtype=torch.float32)  # [L]
    inv_timescales = torch.exp(
        -math.log(10000.0) / (dim / 2 - 1) * torch.arange(dim // 2, device=device, dtype=torch.float32)
    )  # [D/2]
    angles = positions[:, None] * inv_timescales[None, :]  # [L, D/2]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def attention_mask(
    query_length: int,
    key_mask: torch.Tensor | None,
    causal: bool,
    query_offset: int = 0,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """The boolean SDPA mask (True = may attend), [B or 1, 1, N, T], from a key padding mask [B, T] (True = valid)
    and/or causality (query i at absolute position `query_offset + i` sees keys <= that position). None if neither.

    A query row that would see no key at all (a fully padded utterance) is allowed every key instead: its output is
    padding either way, and SDPA returns NaN for an all-masked row."""
    if key_mask is None and not causal:
        return None
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :]  # [B, 1, 1, T]
        device = key_mask.device
    if causal:
        key_length = key_mask.shape[1] if key_mask is not None else query_offset + query_length
        query_positions = torch.arange(query_offset, query_offset + query_length, device=device)
        allowed = torch.arange(key_length, device=device)[None, :] <= query_positions[:, None]  # [N, T]
        mask = allowed[None, None] if mask is None else mask & allowed[None, None]
    assert mask is not None
    return mask | ~mask.any(dim=-1, keepdim=True)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with separate query, key and value projections (so keys and values
    of a fixed memory can be projected once and reused, see `project_kv`).

    Args:
        dim: D.
        num_heads: H; D must divide by it.
        dropout: attention-probability dropout during training.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        require(num_heads > 0 and dim % num_heads == 0, f"model width {dim} must divide into {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)  # [B, H, L, Dh]

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> keys and values [B, H, T, Dh]."""
        return self._heads(self.key(x)), self._heads(self.value(x))

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None):
        """query [B, N, D] against projected keys/values [B, H, T, Dh] -> [B, N, D]."""
        batch, length, dim = query.shape
        y = F.scaled_dot_product_attention(
            self._heads(self.query(query)),
            keys,
            values,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # [B, H, N, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """query [B, N, D], memory [B, T, D], mask [B or 1, 1, N, T] bool (True = attend) -> [B, N, D]."""
        keys, values = self.project_kv(memory)
        return self.attend(query, keys, values, mask)


class FeedForward(nn.Module):
    """FunASR's `PositionwiseFeedForward`: W2 dropout(relu(W1 x)). x: [..., D] -> [..., D]."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(F.relu(self.w1(x))))
