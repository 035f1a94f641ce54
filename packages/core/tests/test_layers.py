"""Layers against naive references: attention by explicit softmax, RoPE by complex rotation."""

import math

import torch
import torch.nn.functional as F

from paperzoo.core.layers import CausalSelfAttention, RotaryEmbedding, SwiGLU, swiglu_hidden_dim


def naive_rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as the paper writes it: channel pair (i, i + Dh/2) is a complex number rotated by t * theta_i."""
    seq_len, half = x.shape[-2], x.shape[-1] // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / (2 * half))
    angle = torch.arange(seq_len, dtype=torch.float64)[:, None] * theta[None, :]
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


def naive_causal_attention(module: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    batch, seq_len, dim = x.shape
    heads = module.n_heads
    q, k, v = (x @ module.qkv.weight.T).view(batch, seq_len, 3, heads, dim // heads).unbind(2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    q, k = naive_rope(q), naive_rope(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim // heads)
    future = torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, seq_len, dim) @ module.out.weight.T


def test_rotary_matches_complex_rotation():
    x = torch.randn(2, 3, 10, 8)
    torch.testing.assert_close(RotaryEmbedding(8, 16)(x), naive_rope(x), atol=1e-5, rtol=1e-5)


def test_rotary_keeps_relative_positions():
    # <R_m q, R_n k> depends on m - n only: shifting both positions leaves the score unchanged.
    rope = RotaryEmbedding(8, 32)
    q, k = torch.randn(8), torch.randn(8)
    seq = torch.zeros(1, 1, 20, 8)
    seq[0, 0, 3], seq[0, 0, 7] = q, k
    a = rope(seq)[0, 0]
    seq2 = torch.zeros(1, 1, 20, 8)
    seq2[0, 0, 10], seq2[0, 0, 14] = q, k
    b = rope(seq2)[0, 0]
    torch.testing.assert_close(a[3] @ a[7], b[10] @ b[14], atol=1e-5, rtol=1e-5)


def test_attention_matches_naive_softmax():
    torch.manual_seed(0)
    module = CausalSelfAttention(dim=32, n_heads=4, max_seq_len=16).eval()
    x = torch.randn(3, 12, 32)
    torch.testing.assert_close(module(x), naive_causal_attention(module, x), atol=1e-5, rtol=1e-4)


def test_attention_is_causal():
    torch.manual_seed(0)
    module = CausalSelfAttention(dim=16, n_heads=2, max_seq_len=16).eval()
    x = torch.randn(1, 10, 16)
    changed = x.clone()
    changed[:, 6:] = torch.randn(1, 4, 16)
    torch.testing.assert_close(module(x)[:, :6], module(changed)[:, :6])
    assert not torch.allclose(module(x)[:, 6:], module(changed)[:, 6:])


def test_swiglu_formula():
    torch.manual_seed(0)
    mlp = SwiGLU(6, 10)
    x = torch.randn(4, 6)
    expected = (F.silu(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T)) @ mlp.down.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_swiglu_hidden_dim_is_two_thirds_of_4d_rounded():
    assert swiglu_hidden_dim(96) == 256  # 2/3 * 384 = 256
    assert swiglu_hidden_dim(100, multiple_of=32) == 288  # 266.7 -> 288
