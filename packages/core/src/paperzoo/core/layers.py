"""Transformer layers shared by every domain: RoPE, causal self-attention through SDPA, SwiGLU and a block.

RMSNorm is `torch.nn.RMSNorm`. Shapes use B = batch, T = sequence length, D = model width, H = heads,
Dh = head width.
"""

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer, arXiv:2104.09864), rotating channel pairs (i, i + Dh/2).

    Args:
        head_dim: Dh, even.
        max_seq_len: longest sequence the cached angles cover.
        base: the frequency base, 10000 in the paper.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        require(head_dim % 2 == 0, f"rotary embedding needs an even head width, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # [Dh/2]
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # [T, Dh/2]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: [B, H, T, Dh] -> same shape, position t rotated by (offset + t) * inv_freq (offset: cached tokens)."""
        seq_len = x.shape[-2]
        positions = slice(offset, offset + seq_len)
        cos, sin = self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype)  # [T, Dh/2]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE, computed by `F.scaled_dot_product_attention`.

    Args:
        dim: D.
        n_heads: H; D must divide by it.
        max_seq_len: longest sequence for the rotary cache.
        dropout: attention dropout during training.
    """

    def __init__(self, dim: int, n_heads: int, max_seq_len: int, dropout: float = 0.0):
        super().__init__()
        require(n_heads > 0 and dim % n_heads == 0, f"model width {dim} must divide into {n_heads} heads")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.rotary = RotaryEmbedding(dim // n_heads, max_seq_len)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D] -> [B, T, D]; position t attends to positions <= t."""
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq_len, 3, self.n_heads, dim // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, seq_len, dim))


class SwiGLU(nn.Module):
    """The gated MLP of "GLU Variants Improve Transformer" (arXiv:2002.05202): W2(silu(W1 x) * W3 x).

    Args:
        dim: D.
        hidden_dim: width of the gated hidden layer.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden_dim, bias=False)
        self.up = nn.Linear(dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., D] -> [..., D]."""
        return self.down(F.silu(self.gate(x)) * self.up(x))


def swiglu_hidden_dim(dim: int, multiple_of: int = 32) -> int:
    """LLaMA's hidden width: 2/3 of 4D (same parameters as a 4D GELU MLP), rounded up to `multiple_of`."""
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class TransformerBlock(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)). x: [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, n_heads: int, max_seq_len: int, dropout: float = 0.0):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, max_seq_len, dropout)
        self.mlp_norm = nn.RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden_dim(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))
