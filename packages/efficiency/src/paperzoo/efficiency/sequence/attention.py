"""Softmax multi-head attention as a `TokenMixer`: the transformer baseline of every long-sequence comparison.

"Attention Is All You Need" (arXiv:1706.03762) with rotary positions (RoFormer, arXiv:2104.09864), computed by
`F.scaled_dot_product_attention`. In the unified view (arXiv:2302.06218) M = softmax(Q K^T / sqrt(Dh)) per head,
the same for every channel of that head, and V x are the value projections. Causal or bidirectional; the causal
mixer has a step mode with a key/value cache, the baseline that recurrent generation is measured against.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.layers import RotaryEmbedding
from paperzoo.efficiency.sequence.mixer import TokenMixer, register_mixer


@register_mixer("attention")
class AttentionMixer(TokenMixer):
    """Multi-head softmax attention with RoPE.

    Args:
        dim: D.
        n_heads: H; D must divide by it.
        causal: position i attends to j <= i only.
        max_seq_len: longest sequence the rotary cache covers.
        dropout: attention dropout during training.

    Shapes: x [B, L, D] -> [B, L, D]; C = D in the materialised view.
    """

    def __init__(self, dim: int, n_heads: int = 4, causal: bool = True, max_seq_len: int = 16384, dropout: float = 0.0):
        super().__init__()
        require(n_heads > 0 and dim % n_heads == 0, f"attention width {dim} must divide into {n_heads} heads")
        self.n_heads, self.head_dim, self.causal, self.dropout = n_heads, dim // n_heads, causal, dropout
        self.supports_step = causal  # a key/value cache only makes sense when no position sees the future
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, max_seq_len)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, L, D] -> q, k, v: [B, H, L, Dh], rotary applied to q and k."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return self.rotary(q), self.rotary(k), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, L, Dh]
        return self.out(y.transpose(1, 2).flatten(2))

    def values(self, x: torch.Tensor) -> torch.Tensor:
        return self._heads(x)[2].transpose(1, 2).flatten(2)  # [B, L, H*Dh]

    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        q, k, _ = self._heads(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, H, L, L]
        if self.causal:
            length = x.shape[1]
            future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = scores.softmax(-1)
        return weights.repeat_interleave(self.head_dim, dim=1)  # [B, D, L, L]: channel c belongs to head c // Dh

    def readout(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        return self.out(mixed)

    # --- step mode: a key/value cache -------------------------------------------------------------------------
    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        empty = torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """x: [B, D] -> [B, D]; the cache grows by one position, so the cost per token grows with the context."""
        require(self.causal, "a bidirectional attention mixer has no step mode")
        position = state["k"].shape[2]
        q, k, v = self.qkv(x).view(x.shape[0], 3, self.n_heads, 1, self.head_dim).unbind(1)  # [B, H, 1, Dh]
        keys = torch.cat((state["k"], self.rotary(k, offset=position)), dim=2)
        vals = torch.cat((state["v"], v), dim=2)
        y = F.scaled_dot_product_attention(self.rotary(q, offset=position), keys, vals)  # [B, H, 1, Dh]
        return self.out(y.flatten(1)), {"k": keys, "v": vals}
