"""Blockwise exact attention with online-softmax statistics: the single-process primitives of LightSeq's DistAttn.

"LightSeq: Sequence Level Parallelism for Distributed Training of Long Context Transformers" (Li, Shao et al.,
arXiv:2310.03294, https://arxiv.org/abs/2310.03294). DistAttn computes attention one (query chunk, key/value chunk)
block at a time, the way memory-efficient attention (Rabe & Staats, arXiv:2112.05682; FlashAttention,
arXiv:2205.14135) does inside one device, and merges the blocks exactly through their softmax statistics. This module
holds those primitives; `ring.py` runs them across processes, and other long-sequence modules import them.

What is here:
- `attention_block(q, k, v, ...)`: softmax attention of a query block against ONE key/value block, returned as a
  `Partial` = (out, lse, max): the output normalised over this block's keys only, the row log-sum-exp of the scaled
  scores over those keys, and the row maximum. Causal masking uses GLOBAL positions (`q_start`, `k_start`), so a
  block cut from anywhere in the sequence is masked as in the full matrix.
- `merge_partials(a, b)`: the exact merge. With lse = log(e^lse_a + e^lse_b), out = e^(lse_a - lse) out_a
  + e^(lse_b - lse) out_b. It is associative and commutative, so blocks can be merged in any order (what the ring
  and the load-balanced schedule rely on). A row that sees no key in a block has lse = -inf and weight 0.
- `attention_block_backward(...)`: the gradient of one block given the FINAL out and lse of its rows
  (FlashAttention-2's backward, arXiv:2307.08691): P = exp(S - lse), dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)),
  dQ = dS K scale, dK = dS^T Q scale. Per-block gradients of dK/dV add up over query blocks, dQ over key blocks.
- `blockwise_attention(q, k, v, block_size, causal)`: dense softmax attention computed tile by tile in a custom
  autograd Function. Forward and backward hold one [block x block] score tile at a time (plus O(L) statistics),
  never an L x L tensor; the backward recomputes the tiles from the saved (q, k, v, out, lse).
- `dense_attention`: the materialised reference the tests compare against.

Grouped-query and multi-query attention: k and v carry Hkv heads with Hq % Hkv == 0; query head h reads key/value
head h // (Hq / Hkv) (the `repeat_interleave` convention of `F.scaled_dot_product_attention(enable_gqa=True)`).
The key/value heads are never repeated in memory: the query heads are viewed as [Hkv, G] groups instead.

Shapes: q [B, Hq, Lq, Dk], k [B, Hkv, Lk, Dk], v [B, Hkv, Lk, Dv]; out [B, Hq, Lq, Dv]; lse, max [B, Hq, Lq].
Precision: scores and statistics are computed in float32 for half/bfloat16 inputs, else in the input dtype.
Causal masking follows `F.scaled_dot_product_attention(is_causal=True)` when Lq == Lk (query i sees keys j <= i);
in general query position q_start + i sees key position k_start + j iff k_start + j <= q_start + i.
"""

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch

from paperzoo.core.errors import require

__all__ = [
    "Partial",
    "attention_block",
    "attention_block_backward",
    "blockwise_attention",
    "blockwise_attention_with_lse",
    "causal_block_kind",
    "dense_attention",
    "empty_partial",
    "merge_all",
    "merge_partials",
    "softmax_delta",
]


class Partial(NamedTuple):
    """Attention of a set of query rows over a subset of the keys, in mergeable form.

    out: [B, Hq, Lq, Dv] normalised over the subset's keys (0 for a row that sees none of them);
    lse: [B, Hq, Lq] log sum_j exp(scale * q_i . k_j) over the visible keys j of the subset (-inf when none);
    max: [B, Hq, Lq] max_j scale * q_i . k_j over the same keys (-inf when none), the running maximum.
    """

    out: torch.Tensor
    lse: torch.Tensor
    max: torch.Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Validate [B, H, L, D] layouts and return the group size G = Hq / Hkv."""
    require(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, "q, k, v must be [batch, heads, length, head_dim]")
    require(
        q.shape[0] == k.shape[0] == v.shape[0], f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}"
    )
    require(k.shape[1] == v.shape[1], f"k has {k.shape[1]} heads but v has {v.shape[1]}")
    require(k.shape[2] == v.shape[2], f"k has length {k.shape[2]} but v has {v.shape[2]}")
    require(q.shape[-1] == k.shape[-1], f"q head_dim {q.shape[-1]} differs from k head_dim {k.shape[-1]}")
    require(
        k.shape[1] > 0 and q.shape[1] % k.shape[1] == 0,
        f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})",
    )
    return q.shape[1] // k.shape[1]


def causal_block_kind(q_start: int, q_len: int, k_start: int, k_len: int) -> str:
    """How the causal mask cuts the block of query positions [q_start, q_start + q_len) x key positions
    [k_start, k_start + k_len): "full" (every key visible to every query), "empty" (none visible to any) or
    "partial" (a mask is needed)."""
    if q_len == 0 or k_len == 0 or k_start > q_start + q_len - 1:
        return "empty"
    if k_start + k_len - 1 <= q_start:
        return "full"
    return "partial"


def _causal_mask(q_start: int, q_len: int, k_start: int, k_len: int, device: torch.device) -> torch.Tensor:
    """[q_len, k_len] bool, True where the key is visible (global key position <= global query position)."""
    q_pos = torch.arange(q_start, q_start + q_len, device=device)
    k_pos = torch.arange(k_start, k_start + k_len, device=device)
    return k_pos[None, :] <= q_pos[:, None]


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float, group: int, dtype: torch.dtype) -> torch.Tensor:
    """q [B, Hq, Lq, D], k [B, Hkv, Lk, D] -> scaled scores [B, Hkv, G, Lq, Lk] in `dtype`."""
    b, hq, lq, d = q.shape
    qg = q.to(dtype).reshape(b, hq // group, group, lq, d)
    return torch.matmul(qg, k.to(dtype).unsqueeze(2).transpose(-1, -2)) * scale


def empty_partial(q: torch.Tensor, v_dim: int) -> Partial:
    """The neutral element of `merge_partials` for the rows of q [B, Hq, Lq, D]: attention over no keys."""
    dtype = _compute_dtype(q.dtype)
    b, h, lq, _ = q.shape
    lse = torch.full((b, h, lq), -math.inf, dtype=dtype, device=q.device)
    return Partial(torch.zeros(b, h, lq, v_dim, dtype=dtype, device=q.device), lse, lse.clone())


def attention_block(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    q_start: int = 0,
    k_start: int = 0,
) -> Partial:
    """Softmax attention of the query rows q over ONE block of keys/values, as a mergeable `Partial`.

    Args:
        q: [B, Hq, Lq, Dk] queries.
        k: [B, Hkv, Lk, Dk] keys, Hq % Hkv == 0.
        v: [B, Hkv, Lk, Dv] values.
        scale: score scale, 1/sqrt(Dk) by default.
        causal: mask keys at global positions after the query's global position.
        q_start: global position of q's first row.
        k_start: global position of k's first row.

    Returns:
        `Partial` (out [B, Hq, Lq, Dv], lse [B, Hq, Lq], max [B, Hq, Lq]), in float32 for half inputs.
    """
    group = _check_shapes(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dtype = _compute_dtype(q.dtype)
    b, hq, lq, _ = q.shape
    kind = causal_block_kind(q_start, lq, k_start, k.shape[2]) if causal else "full"
    if kind == "empty":
        return empty_partial(q, v.shape[-1])
    s = _scores(q, k, scale, group, dtype)  # [B, Hkv, G, Lq, Lk]
    if kind == "partial":
        s = s.masked_fill(~_causal_mask(q_start, lq, k_start, k.shape[2], q.device), -math.inf)
    row_max = s.amax(dim=-1, keepdim=True)  # [B, Hkv, G, Lq, 1]; -inf for a row that sees no key
    safe_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    p = torch.exp(s - safe_max)  # unnormalised, <= 1
    row_sum = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p, v.to(dtype).unsqueeze(2)) / row_sum.clamp_min(torch.finfo(dtype).tiny)  # [B,Hkv,G,Lq,Dv]
    lse = (safe_max + torch.log(row_sum)).squeeze(-1)  # log(0) = -inf for an empty row
    return Partial(out.reshape(b, hq, lq, v.shape[-1]), lse.reshape(b, hq, lq), row_max.squeeze(-1).reshape(b, hq, lq))


def merge_partials(a: Partial, b: Partial) -> Partial:
    """Exact merge of the attention over two disjoint key sets into the attention over their union.

    lse = logaddexp(lse_a, lse_b); out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b; max = max(max_a, max_b).
    Rows that see no key in either set keep out = 0, lse = -inf (no NaN).
    """
    lse = torch.logaddexp(a.lse, b.lse)
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)  # both -inf: weights exp(-inf) = 0
    wa = torch.exp(a.lse - safe).unsqueeze(-1)
    wb = torch.exp(b.lse - safe).unsqueeze(-1)
    return Partial(wa * a.out + wb * b.out, lse, torch.maximum(a.max, b.max))


def merge_all(partials: Iterable[Partial]) -> Partial:
    """Merge any number of partials (in the order given; the result does not depend on it up to rounding)."""
    merged: Partial | None = None
    for part in partials:
        merged = part if merged is None else merge_partials(merged, part)
    require(merged is not None, "merge_all needs at least one partial")
    return merged  # type: ignore[return-value]


def softmax_delta(out: torch.Tensor, dout: torch.Tensor) -> torch.Tensor:
    """rowsum(dO * O) [B, Hq, Lq], the per-row term of the softmax backward (FlashAttention-2's D)."""
    dtype = _compute_dtype(out.dtype)
    return (out.to(dtype) * dout.to(dtype)).sum(-1)


def attention_block_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    lse: torch.Tensor,
    delta: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    q_start: int = 0,
    k_start: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This block's share of the attention gradients, given the rows' FINAL statistics over all keys.

    Args:
        q, k, v, scale, causal, q_start, k_start: as in `attention_block`.
        dout: [B, Hq, Lq, Dv] gradient of the full attention output of these rows.
        lse: [B, Hq, Lq] log-sum-exp of these rows over ALL keys (the merged `Partial.lse`).
        delta: [B, Hq, Lq] `softmax_delta(out, dout)` of the full output.

    Returns:
        (dq [B, Hq, Lq, Dk], dk [B, Hkv, Lk, Dk], dv [B, Hkv, Lk, Dv]) in the compute dtype: dq sums over key
        blocks, dk and dv over query blocks (and over the query heads of each group).
    """
    group = _check_shapes(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dtype = _compute_dtype(q.dtype)
    b, hq, lq, dk_dim = q.shape
    hkv, lk, dv_dim = k.shape[1], k.shape[2], v.shape[-1]
    kind = causal_block_kind(q_start, lq, k_start, lk) if causal else "full"
    if kind == "empty":
        return (
            torch.zeros(b, hq, lq, dk_dim, dtype=dtype, device=q.device),
            torch.zeros(b, hkv, lk, dk_dim, dtype=dtype, device=q.device),
            torch.zeros(b, hkv, lk, dv_dim, dtype=dtype, device=q.device),
        )
    s = _scores(q, k, scale, group, dtype)  # [B, Hkv, G, Lq, Lk]
    lse_g = lse.to(dtype).reshape(b, hkv, group, lq, 1)
    lse_g = torch.where(torch.isinf(lse_g), torch.zeros_like(lse_g), lse_g)  # a row with no key: all p = 0
    if kind == "partial":
        s = s.masked_fill(~_causal_mask(q_start, lq, k_start, lk, q.device), -math.inf)
    p = torch.exp(s - lse_g)  # the final softmax probabilities of this tile
    do = dout.to(dtype).reshape(b, hkv, group, lq, dv_dim)
    vg, kg = v.to(dtype).unsqueeze(2), k.to(dtype).unsqueeze(2)  # [B, Hkv, 1, Lk, D]
    dv = torch.matmul(p.transpose(-1, -2), do).sum(2)  # [B, Hkv, Lk, Dv]
    dp = torch.matmul(do, vg.transpose(-1, -2))  # [B, Hkv, G, Lq, Lk]
    ds = p * (dp - delta.to(dtype).reshape(b, hkv, group, lq, 1)) * scale
    dq = torch.matmul(ds, kg).reshape(b, hq, lq, dk_dim)
    qg = q.to(dtype).reshape(b, hkv, group, lq, dk_dim)
    dk = torch.matmul(ds.transpose(-1, -2), qg).sum(2)  # [B, Hkv, Lk, Dk]
    return dq, dk, dv


def _blocks(length: int, block_size: int) -> list[tuple[int, int]]:
    return [(start, min(block_size, length - start)) for start in range(0, length, block_size)]


def _forward_tiles(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [B, Hq, Lq, Dv] (compute dtype), lse [B, Hq, Lq], one [block x block] tile at a time."""
    b, hq, lq, _ = q.shape
    dtype = _compute_dtype(q.dtype)
    out = torch.empty(b, hq, lq, v.shape[-1], dtype=dtype, device=q.device)
    lse = torch.empty(b, hq, lq, dtype=dtype, device=q.device)
    for q0, qn in _blocks(lq, block_size):
        acc = empty_partial(q[:, :, q0 : q0 + qn], v.shape[-1])
        for k0, kn in _blocks(k.shape[2], block_size):
            if causal and causal_block_kind(q0, qn, k0, kn) == "empty":
                break  # key blocks only move further right
            part = attention_block(
                q[:, :, q0 : q0 + qn],
                k[:, :, k0 : k0 + kn],
                v[:, :, k0 : k0 + kn],
                scale=scale,
                causal=causal,
                q_start=q0,
                k_start=k0,
            )
            acc = merge_partials(acc, part)
        out[:, :, q0 : q0 + qn], lse[:, :, q0 : q0 + qn] = acc.out, acc.lse
    return out, lse


class _BlockwiseAttention(torch.autograd.Function):
    """Tiled exact attention; saves (q, k, v, out, lse) and recomputes tiles in backward."""

    @staticmethod
    def forward(ctx, q, k, v, block_size: int, causal: bool, scale: float):  # type: ignore[override]
        out, lse = _forward_tiles(q, k, v, block_size, causal, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.block_size, ctx.causal, ctx.scale = block_size, causal, scale
        ctx.mark_non_differentiable(lse)
        return out.to(q.dtype), lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, _dlse):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dtype = _compute_dtype(q.dtype)
        dq = torch.zeros(q.shape, dtype=dtype, device=q.device)
        dk = torch.zeros(k.shape, dtype=dtype, device=k.device)
        dv = torch.zeros(v.shape, dtype=dtype, device=v.device)
        delta = softmax_delta(out, dout)
        bs = ctx.block_size
        for q0, qn in _blocks(q.shape[2], bs):
            rows = slice(q0, q0 + qn)
            for k0, kn in _blocks(k.shape[2], bs):
                if ctx.causal and causal_block_kind(q0, qn, k0, kn) == "empty":
                    break
                cols = slice(k0, k0 + kn)
                dqb, dkb, dvb = attention_block_backward(
                    q[:, :, rows],
                    k[:, :, cols],
                    v[:, :, cols],
                    dout[:, :, rows],
                    lse[:, :, rows],
                    delta[:, :, rows],
                    scale=ctx.scale,
                    causal=ctx.causal,
                    q_start=q0,
                    k_start=k0,
                )
                dq[:, :, rows] += dqb
                dk[:, :, cols] += dkb
                dv[:, :, cols] += dvb
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def blockwise_attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_size: int = 128,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`blockwise_attention` that also returns the rows' log-sum-exp [B, Hq, Lq] (not differentiable)."""
    _check_shapes(q, k, v)
    require(isinstance(block_size, int) and block_size > 0, f"block_size must be a positive int, got {block_size!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    out, lse = _BlockwiseAttention.apply(q, k, v, block_size, causal, scale)
    return out, lse


def blockwise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_size: int = 128,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact softmax attention computed in [block_size x block_size] tiles merged by online softmax.

    Equal (up to rounding) to `softmax(q k^T * scale + mask) v`, with memory proportional to the block size: no
    L x L tensor is formed in forward or backward. Differentiable in q, k, v.

    Args:
        q: [B, Hq, Lq, Dk]; k: [B, Hkv, Lk, Dk]; v: [B, Hkv, Lk, Dv], Hq % Hkv == 0 (MHA, GQA, MQA).
        block_size: rows and columns per tile.
        causal: query i sees keys j <= i (positions counted from 0 in both).
        scale: score scale, 1/sqrt(Dk) by default.

    Returns:
        [B, Hq, Lq, Dv] in q's dtype.
    """
    return blockwise_attention_with_lse(q, k, v, block_size, causal, scale)[0]


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    q_start: int = 0,
    k_start: int = 0,
) -> torch.Tensor:
    """The materialised reference: softmax(q k^T * scale + causal mask) v with the full [Lq, Lk] matrix, key/value
    heads repeated for GQA/MQA. Shapes as in `attention_block`; plain autograd."""
    group = _check_shapes(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        s = s.masked_fill(~_causal_mask(q_start, q.shape[2], k_start, k.shape[2], q.device), -math.inf)
    return torch.matmul(torch.softmax(s, dim=-1), v)
