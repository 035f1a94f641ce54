"""LightSeq's blockwise primitives against dense softmax attention and hand-computed values."""

import inspect
import itertools
import math

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.lightseq import blockwise as blockwise_module
from paperzoo.efficiency.sequence.lightseq.blockwise import (
    attention_block,
    attention_block_backward,
    blockwise_attention,
    blockwise_attention_with_lse,
    causal_block_kind,
    dense_attention,
    empty_partial,
    merge_all,
    merge_partials,
    softmax_delta,
)

HEADS = {"mha": (4, 4), "gqa": (4, 2), "mqa": (4, 1)}


def qkv(b, hq, hkv, lq, lk, d=8, dv=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, lq, d, generator=g, dtype=dtype)
    k = torch.randn(b, hkv, lk, d, generator=g, dtype=dtype)
    v = torch.randn(b, hkv, lk, dv or d, generator=g, dtype=dtype)
    return q, k, v


def naive_attention(q, k, v, causal, q_start=0, k_start=0):
    """Explicit loops over rows, keys and heads: the definition."""
    b, hq, lq, d = q.shape
    group = hq // k.shape[1]
    out = torch.zeros(b, hq, lq, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        for h in range(hq):
            for i in range(lq):
                scores = [
                    float(q[bi, h, i] @ k[bi, h // group, j]) / math.sqrt(d)
                    for j in range(k.shape[2])
                    if not causal or k_start + j <= q_start + i
                ]
                keys = [j for j in range(k.shape[2]) if not causal or k_start + j <= q_start + i]
                weights = torch.softmax(torch.tensor(scores, dtype=q.dtype), 0)
                out[bi, h, i] = sum(w * v[bi, h // group, j] for w, j in zip(weights, keys, strict=True))
    return out


def test_hand_computed_block_and_merge():
    # one head, d = 1, scale 1: q = 1, keys 0, log 2, log 3 with values 1, 2, 3
    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    k = torch.tensor([0.0, math.log(2), math.log(3)], dtype=torch.float64).view(1, 1, 3, 1)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 3, 1)
    # softmax weights 1/6, 2/6, 3/6 -> output (1 + 4 + 9) / 6, lse log 6
    whole = attention_block(q, k, v, scale=1.0)
    assert whole.out.item() == pytest.approx(14 / 6)
    assert whole.lse.item() == pytest.approx(math.log(6))
    assert whole.max.item() == pytest.approx(math.log(3))
    left = attention_block(q, k[:, :, :1], v[:, :, :1], scale=1.0)  # out 1, lse 0
    right = attention_block(q, k[:, :, 1:], v[:, :, 1:], scale=1.0)  # out (4 + 9) / 5, lse log 5
    assert (left.out.item(), left.lse.item()) == pytest.approx((1.0, 0.0))
    assert (right.out.item(), right.lse.item()) == pytest.approx((13 / 5, math.log(5)))
    merged = merge_partials(left, right)
    assert merged.out.item() == pytest.approx(14 / 6)
    assert merged.lse.item() == pytest.approx(math.log(6))
    assert merged.max.item() == pytest.approx(math.log(3))


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("causal", [False, True])
def test_blocks_merged_equal_the_loop_definition(heads, causal):
    hq, hkv = HEADS[heads]
    q, k, v = qkv(2, hq, hkv, 5, 5, d=3, dv=2)
    expected = naive_attention(q, k, v, causal)
    assert torch.allclose(dense_attention(q, k, v, causal), expected, atol=1e-12)
    cuts = [0, 2, 3, 5]  # uneven key blocks, merged out of order
    parts = [
        attention_block(q, k[:, :, a:b], v[:, :, a:b], causal=causal, k_start=a) for a, b in itertools.pairwise(cuts)
    ]
    merged = merge_all([parts[2], parts[0], parts[1]])
    assert torch.allclose(merged.out, expected, atol=1e-12)
    s = torch.matmul(q, k.repeat_interleave(hq // hkv, 1).transpose(-1, -2)) / math.sqrt(3)
    if causal:
        s = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), -math.inf)
    assert torch.allclose(merged.lse, torch.logsumexp(s, -1), atol=1e-12)
    assert torch.allclose(merged.max, s.amax(-1), atol=1e-12)


def test_global_positions_mask_an_offset_block():
    q, k, v = qkv(1, 2, 1, 4, 6, d=4)
    # queries at positions 10..13, keys at 9..14: query 10 sees keys 9, 10; query 13 sees 9..13
    block = attention_block(q, k, v, causal=True, q_start=10, k_start=9)
    assert torch.allclose(block.out, naive_attention(q, k, v, True, q_start=10, k_start=9), atol=1e-12)
    assert causal_block_kind(10, 4, 9, 6) == "partial"
    assert causal_block_kind(10, 4, 14, 3) == "empty"
    assert causal_block_kind(10, 4, 4, 7) == "full"
    empty = attention_block(q, k, v, causal=True, q_start=0, k_start=4)
    assert torch.all(empty.out == 0) and torch.all(torch.isneginf(empty.lse))


def test_rows_without_keys_merge_without_nan():
    q, k, v = qkv(1, 1, 1, 3, 3, d=2)
    # key 1 only: query 0 sees nothing, queries 1, 2 see key 1
    part = attention_block(q, k[:, :, 1:2], v[:, :, 1:2], causal=True, k_start=1)
    assert torch.isneginf(part.lse[0, 0, 0]) and torch.all(part.out[0, 0, 0] == 0)
    merged = merge_partials(part, empty_partial(q, 2))
    assert not torch.isnan(merged.out).any()
    assert torch.equal(merged.out, part.out) and torch.equal(merged.lse, part.lse)
    both_empty = merge_partials(empty_partial(q, 2), empty_partial(q, 2))
    assert not torch.isnan(both_empty.out).any() and torch.all(torch.isneginf(both_empty.lse))


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("length", "block"), [(1, 4), (7, 3), (16, 4), (13, 32), (9, 1)])
def test_blockwise_attention_forward_and_gradients_equal_dense(heads, causal, length, block):
    hq, hkv = HEADS[heads]
    q, k, v = qkv(2, hq, hkv, length, length, d=4, dv=3, seed=length)
    for t in (q, k, v):
        t.requires_grad_(True)
    out = blockwise_attention(q, k, v, block_size=block, causal=causal)
    ref = dense_attention(q, k, v, causal)
    assert torch.allclose(out, ref, atol=1e-12)
    dout = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-10)


def test_cross_attention_lengths_and_lse():
    q, k, v = qkv(1, 2, 2, 5, 11, d=4)
    out, lse = blockwise_attention_with_lse(q, k, v, block_size=4)
    assert torch.allclose(out, dense_attention(q, k, v), atol=1e-12)
    assert torch.allclose(lse, torch.logsumexp(q @ k.transpose(-1, -2) / 2.0, -1), atol=1e-12)


def test_gradcheck_float64():
    q, k, v = qkv(1, 2, 1, 5, 5, d=3)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: blockwise_attention(a, b, c, 2, True), inputs)


def test_block_backward_sums_to_the_dense_gradient():
    q, k, v = qkv(1, 4, 2, 6, 6, d=4)
    q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
    ref = dense_attention(q, k, v, causal=True)
    dout = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (q, k, v), dout)
    out, lse = blockwise_attention_with_lse(q, k, v, block_size=6, causal=True)
    delta = softmax_delta(out, dout)
    dq = torch.zeros_like(q)
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    for a, b in ((0, 4), (4, 6)):  # two key blocks with their global positions
        g = attention_block_backward(q, k[:, :, a:b], v[:, :, a:b], dout, lse, delta, causal=True, k_start=a)
        dq += g[0]
        dk[:, :, a:b] += g[1]
        dv[:, :, a:b] += g[2]
    for got, expected in zip((dq, dk, dv), want, strict=True):
        assert torch.allclose(got, expected, atol=1e-12)


def test_half_precision_inputs_use_float32_statistics():
    q, k, v = qkv(1, 2, 1, 33, 33, d=8, dtype=torch.float32)
    out = blockwise_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), block_size=8, causal=True)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), dense_attention(q, k, v, True), atol=3e-2)
    part = attention_block(q.half(), k.half(), v.half())
    assert part.lse.dtype == torch.float32


class RecordingTorch:
    """Stands in for the `torch` module inside blockwise.py and records the largest tensor its functions return
    (the score tiles come from `torch.matmul`; elementwise operators on them keep their size)."""

    def __init__(self):
        self.largest = 0

    def __getattr__(self, name):
        attribute = getattr(torch, name)
        if not callable(attribute) or inspect.isclass(attribute):
            return attribute

        def recorded(*args, **kwargs):
            result = attribute(*args, **kwargs)
            for t in result if isinstance(result, tuple | list) else (result,):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return result

        return recorded


def test_no_length_squared_tensor_in_forward_or_backward(monkeypatch):
    length, block = 96, 16
    q, k, v = qkv(1, 2, 1, length, length, d=8, dtype=torch.float32)
    inputs = [t.requires_grad_(True) for t in (q, k, v)]
    recorder = RecordingTorch()
    monkeypatch.setattr(blockwise_module, "torch", recorder)
    dense_attention(*inputs, causal=True).sum().backward()
    assert recorder.largest >= 2 * length * length  # the recorder sees the reference's [B, H, L, L] scores
    recorder.largest = 0
    blockwise_attention(*inputs, block_size=block, causal=True).sum().backward()
    assert 0 < recorder.largest <= 2 * length * 8  # q-sized at most: a tile is 2 x 16 x 16 = 512 elements


def test_bad_shapes_raise_config_errors():
    q, k, v = qkv(1, 3, 2, 4, 4)
    with pytest.raises(ConfigError, match="multiple of key/value heads"):
        blockwise_attention(q, k, v)
    q, k, v = qkv(1, 2, 2, 4, 4)
    with pytest.raises(ConfigError, match="block_size"):
        blockwise_attention(q, k, v, block_size=0)
    with pytest.raises(ConfigError, match="length"):
        attention_block(q, k, v[:, :, :3])
