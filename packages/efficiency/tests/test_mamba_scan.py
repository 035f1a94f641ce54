"""Mamba's selective scan: the chunked parallel scan against the sequential definition, and their gradients."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.mamba.scan import (
    _chunk_size,
    linear_scan,
    selective_scan,
    selective_scan_ref,
    selective_step,
)


def inputs(batch, length, channels=5, state=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, channels, generator=g, dtype=dtype)
    delta = torch.rand(batch, length, channels, generator=g, dtype=dtype) + 0.05
    A = -torch.rand(channels, state, generator=g, dtype=dtype) * 3 - 0.1
    B = torch.randn(batch, length, state, generator=g, dtype=dtype)
    C = torch.randn(batch, length, state, generator=g, dtype=dtype)
    D = torch.randn(channels, generator=g, dtype=dtype)
    h0 = torch.randn(batch, channels, state, generator=g, dtype=dtype)
    return u, delta, A, B, C, D, h0


def by_hand(u, delta, A, B, C, D):
    """Triple loop over t, channel and state: the paper's recurrence written out scalar by scalar."""
    batch, length, channels = u.shape
    y = torch.zeros_like(u)
    for b in range(batch):
        for c in range(channels):
            h = [0.0] * A.shape[1]
            for t in range(length):
                total = 0.0
                for n in range(A.shape[1]):
                    h[n] = float(torch.exp(delta[b, t, c] * A[c, n])) * h[n] + float(
                        delta[b, t, c] * B[b, t, n] * u[b, t, c]
                    )
                    total += float(C[b, t, n]) * h[n]
                y[b, t, c] = total + float(D[c] * u[b, t, c])
    return y


def test_reference_is_the_recurrence_written_out():
    u, delta, A, B, C, D, _ = inputs(2, 6, channels=3, state=2)
    torch.testing.assert_close(selective_scan_ref(u, delta, A, B, C, D), by_hand(u, delta, A, B, C, D))


@pytest.mark.parametrize(
    ("batch", "length", "chunk"),
    [(1, 1, None), (1, 1, 4), (1, 7, None), (2, 7, 3), (3, 33, None), (2, 33, 8), (1, 64, 8), (2, 65, 8), (1, 50, 64)],
)
def test_parallel_scan_equals_sequential(batch, length, chunk):
    u, delta, A, B, C, D, h0 = inputs(batch, length)
    y, last = selective_scan(u, delta, A, B, C, D, initial_state=h0, return_state=True, chunk_size=chunk)
    y_ref, last_ref = selective_scan_ref(u, delta, A, B, C, D, initial_state=h0, return_state=True)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(last, last_ref)
    torch.testing.assert_close(
        selective_scan(u, delta, A, B, C, chunk_size=chunk), selective_scan_ref(u, delta, A, B, C)
    )


def test_split_sequence_carries_the_state():
    u, delta, A, B, C, D, _ = inputs(2, 20)
    whole = selective_scan(u, delta, A, B, C, D)
    first, state = selective_scan(u[:, :9], delta[:, :9], A, B[:, :9], C[:, :9], D, return_state=True)
    second = selective_scan(u[:, 9:], delta[:, 9:], A, B[:, 9:], C[:, 9:], D, initial_state=state)
    torch.testing.assert_close(torch.cat((first, second), 1), whole)


def test_step_equals_scan():
    u, delta, A, B, C, D, h0 = inputs(2, 9)
    h, outputs = h0, []
    for t in range(9):
        y, h = selective_step(h, u[:, t], delta[:, t], A, B[:, t], C[:, t], D)
        outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, 1), selective_scan(u, delta, A, B, C, D, initial_state=h0))


def test_linear_scan_against_a_loop_with_decay_near_zero_and_one():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 37, 3, 2, generator=g, dtype=torch.float64)
    a[:, ::5] = 0.0  # a forgetting step: the state restarts
    a[:, 1::7] = 1.0
    b = torch.randn(2, 37, 3, 2, generator=g, dtype=torch.float64)
    h, expected = torch.zeros(2, 3, 2, dtype=torch.float64), []
    for t in range(37):
        h = a[:, t] * h + b[:, t]
        expected.append(h)
    for chunk in (None, 1, 4, 36, 37, 100):
        torch.testing.assert_close(linear_scan(a, b, chunk_size=chunk), torch.stack(expected, 1))


def test_long_sequences_stay_finite_in_float32():
    """Strong decay over 4096 steps: a log-space (divide by the cumulative product) scan would overflow here."""
    u, delta, A, B, C, D, _ = inputs(1, 4096, channels=2, state=3, dtype=torch.float32)
    y = selective_scan(u, delta * 10, A, B, C, D)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, -50:], selective_scan_ref(u, delta * 10, A, B, C, D)[:, -50:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [None, 2])
def test_gradcheck_float64(chunk):
    u, delta, A, B, C, D, h0 = inputs(2, 5, channels=2, state=2)
    leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, h0)]

    def scan(*args):
        return selective_scan(*args, return_state=True, chunk_size=chunk)

    assert torch.autograd.gradcheck(scan, leaves)


def test_gradients_equal_the_sequential_reference():
    u, delta, A, B, C, D, h0 = inputs(2, 19, dtype=torch.float32)
    ours = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, h0)]
    ref = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, h0)]
    weights = torch.randn(2, 19, 5)
    y, last = selective_scan(*ours, return_state=True, chunk_size=4)
    ((y * weights).sum() + last.sum()).backward()
    y_ref, last_ref = selective_scan_ref(*ref, return_state=True)
    ((y_ref * weights).sum() + last_ref.sum()).backward()
    for mine, theirs in zip(ours, ref, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-4, rtol=1e-4)


def test_linear_scan_gradcheck():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 11, 3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 11, 3, generator=g, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, chunk_size=4), (a, b, h0))


def test_chunk_size_default_and_errors():
    assert _chunk_size(1024, None) == 32 and _chunk_size(16384, None) == 128 and _chunk_size(1, None) == 8
    with pytest.raises(ConfigError, match="chunk_size"):
        _chunk_size(10, 0)
    with pytest.raises(ConfigError, match="A must be"):
        u, delta, A, B, C, D, _ = inputs(1, 3)
        selective_scan(u, delta, A[:2], B, C)


def test_memory_of_the_backward_is_linear_in_length():
    """Autograd keeps one [B, L, C, N] state tensor (plus the [B, L, *] inputs): bytes per position stay constant."""
    per_position = []
    for length in (256, 1024):
        u, delta, A, B, C, D, _ = inputs(1, length, channels=8, state=4, dtype=torch.float32)
        leaves = [t.requires_grad_() for t in (u, delta, A, B, C, D)]
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            selective_scan(*leaves)
        per_position.append(sum(saved) / length)
    assert per_position[1] <= per_position[0] * 1.01
