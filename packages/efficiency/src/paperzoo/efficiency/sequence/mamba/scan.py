"""The selective scan of Mamba (S6): a sequential reference and a chunked parallel scan with linear memory.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu and Dao, arXiv:2312.00752), Algorithm 2 and
Section 3.2. Per channel c and state n, with input-dependent step delta_t, B_t and C_t and ZOH-discretised A:

    Abar_t = exp(delta_t[c] * A[c, n])                   (A = -exp(A_log) < 0, so 0 < Abar <= 1)
    h_t[c, n] = Abar_t[c, n] * h_{t-1}[c, n] + delta_t[c] * B_t[n] * u_t[c]
    y_t[c] = sum_n C_t[n] * h_t[c, n] + D[c] * u_t[c]

B is discretised with the paper's simplified Euler rule Bbar = delta * B, as the reference `selective_scan_ref` and
its CUDA kernel do. Layout here is time-major per batch: u, delta [B, L, C]; A [C, N]; B, C [B, L, N]; D [C].

- `selective_scan_ref`: an explicit loop over t, the definition (for tests and as documentation);
- `selective_scan`: the recurrence h_t = a_t h_{t-1} + b_t solved by `linear_scan`, a two-level chunked scan:
  within chunks of T positions a loop over the T offsets runs on all chunks at once, the chunk-end states are
  carried across chunks by a loop over the L / T chunks, and a second pass over the offsets starts every chunk from
  its true incoming state. With T ~ sqrt(L) that is O(sqrt(L)) vectorised steps of O(L / sqrt(L)) work each, O(L)
  work, and no tensor larger than [B, L, C, N]. It is a custom autograd function whose backward is the same scan
  run backwards in time (dL/dh_t = g_t + a_{t+1} dL/dh_{t+1}), so autograd keeps only a and h: memory stays linear
  in L (a log-space cumulative-sum scan would divide by prod Abar, which underflows; this one only multiplies).
"""

import math

import torch
import torch.nn.functional as F

from paperzoo.core.errors import require


def _chunk_size(length: int, chunk_size: int | None) -> int:
    """The chunk length T: given, or the power of two nearest sqrt(L) (balances the loop over offsets against the
    loop over chunks, and divides the power-of-two lengths of benchmarks, so that no padding is needed)."""
    if chunk_size is not None:
        require(chunk_size > 0, f"chunk_size must be a positive integer, got {chunk_size}")
        return chunk_size
    return 2 ** max(3, round(math.log2(max(length, 1)) / 2))


@torch.no_grad()
def _scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, chunk_size: int | None, reverse: bool):
    """The chunked scan along dim 1, without autograd (the caller provides the backward).

    Forward (`reverse=False`): h_t = a_t * h_{t-1} + b_t from h_{-1} = h0 (or 0).
    Reverse: g_t = b_t + a_{t+1} * g_{t+1} from g_L = 0, the adjoint of the forward scan (so the backward pass
    reuses the forward's a without shifting a copy of it).
    a, b: [B, L, *S]; h0: [B, *S] or None -> [B, L, *S].
    """
    batch, length = a.shape[:2]
    state_shape = a.shape[2:]
    size = _chunk_size(length, chunk_size)
    chunks = -(-length // size)
    pad = chunks * size - length
    if pad:  # a = 1, b = 0 after the last position: the forward drops those states, the reverse scan starts at 0
        where = (0, 0) * len(state_shape) + (0, pad)
        a = F.pad(a, where, value=1.0)
        b = F.pad(b, where, value=0.0)
    a = a.reshape(batch, chunks, size, *state_shape)
    b = b.reshape(batch, chunks, size, *state_shape)
    # pass 1: each chunk's end state from a zero start, and its total decay, for all chunks at once
    if reverse:  # the chunk's "end" is its first position; the coefficients inside the chunk are a[1:]
        local, decay = b[:, :, size - 1].clone(), torch.ones_like(b[:, :, 0])
        for t in range(size - 2, -1, -1):
            local.mul_(a[:, :, t + 1]).add_(b[:, :, t])
            decay.mul_(a[:, :, t + 1])
    else:
        local, decay = b[:, :, 0].clone(), a[:, :, 0].clone()
        for t in range(1, size):
            local.mul_(a[:, :, t]).add_(b[:, :, t])
            decay.mul_(a[:, :, t])
    # carry across chunks: incoming[k] is what enters chunk k (forward: h before it; reverse: a_next * g after it)
    incoming = torch.empty_like(local)
    if reverse:
        carry = torch.zeros_like(local[:, 0])
        for k in range(chunks - 1, -1, -1):
            incoming[:, k] = carry
            carry = a[:, k, 0] * (local[:, k] + decay[:, k] * carry)
    else:
        carry = torch.zeros_like(local[:, 0]) if h0 is None else h0.to(local.dtype)
        for k in range(chunks):
            incoming[:, k] = carry
            carry = local[:, k] + decay[:, k] * carry
    # pass 2: every state, each chunk started from its incoming state
    h = torch.empty_like(b)
    if reverse:
        torch.add(b[:, :, size - 1], incoming, out=h[:, :, size - 1])
        for t in range(size - 2, -1, -1):
            torch.addcmul(b[:, :, t], a[:, :, t + 1], h[:, :, t + 1], out=h[:, :, t])
    else:
        torch.addcmul(b[:, :, 0], a[:, :, 0], incoming, out=h[:, :, 0])
        for t in range(1, size):
            torch.addcmul(b[:, :, t], a[:, :, t], h[:, :, t - 1], out=h[:, :, t])
    return h.reshape(batch, chunks * size, *state_shape)[:, :length]


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, chunk_size):  # noqa: ANN001 - autograd.Function signature
        h = _scan(a, b, h0, chunk_size, reverse=False)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: ANN001
        a, h, h0 = ctx.saved_tensors
        # g_t = dLoss/dh_t through every later state = grad_h_t + a_{t+1} g_{t+1}: the reverse scan
        g = _scan(a, grad_h.contiguous(), None, ctx.chunk_size, reverse=True)
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:  # dLoss/da_t = g_t * h_{t-1}
            grad_a = torch.empty_like(a)
            torch.mul(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
            if h0 is None:
                grad_a[:, 0] = 0
            else:
                torch.mul(g[:, 0], h0, out=grad_a[:, 0])
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = a[:, 0] * g[:, 0]
        return grad_a, g, grad_h0, None


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, chunk_size: int | None = None
) -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t (elementwise), h_{-1} = h0 or 0; differentiable in a, b and h0.

    a, b: [B, L, *S] (same shape); h0: [B, *S] -> h: [B, L, *S]. `chunk_size` T (default about sqrt(L)).
    """
    require(a.shape == b.shape, f"linear_scan needs a and b of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    require(a.dim() >= 2, f"linear_scan needs [B, L, ...] inputs, got shape {tuple(a.shape)}")
    if a.shape[1] == 0:
        return torch.empty_like(b)
    return _LinearScan.apply(a.contiguous(), b.contiguous(), h0, chunk_size)


def discretize(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOH for A, Euler for B: (Abar = exp(delta A), Bbar u = delta B u), both [B, L, C, N].

    u, delta: [B, L, C]; A: [C, N]; B: [B, L, N].
    """
    decay = torch.exp(delta.unsqueeze(-1) * A)  # [B, L, C, N]
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [B, L, C, N]
    return decay, drive


class _SelectiveScan(torch.autograd.Function):
    """y = C h + D u with h from `_scan`, forward and backward by hand: autograd keeps u, delta, B, C and the states
    h (one [B, L, C, N] tensor); Abar is recomputed in the backward pass instead of being stored."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0, chunk_size):  # noqa: ANN001 - autograd.Function signature
        decay, drive = discretize(u, delta, A, B)  # [B, L, C, N] each
        h = _scan(decay, drive, h0, chunk_size, reverse=False)
        del decay
        y = torch.mul(h, C.unsqueeze(2), out=drive).sum(-1)  # [B, L, C]; drive's memory is free again
        if D is not None:
            y = y + u * D
        ctx.save_for_backward(u, delta, A, B, C, D, h0, h)
        ctx.chunk_size = chunk_size
        return y, h[:, -1]

    @staticmethod
    def backward(ctx, grad_y, grad_last):  # noqa: ANN001
        u, delta, A, B, C, D, h0, h = ctx.saved_tensors
        grad_h = grad_y.unsqueeze(-1) * C.unsqueeze(2)  # [B, L, C, N]: dLoss/dh_t through y_t
        if grad_last is not None:
            grad_h[:, -1] += grad_last
        buffer = torch.mul(grad_y.unsqueeze(-1), h, out=torch.empty_like(h))
        grad_C = buffer.sum(2)  # [B, L, N]
        decay = torch.mul(delta.unsqueeze(-1), A, out=grad_h.new_empty(h.shape)).exp_()  # Abar, recomputed
        g = _scan(decay, grad_h, None, ctx.chunk_size, reverse=True)  # dLoss/dh_t = dLoss/d(Bbar u)_t
        del grad_h
        scaled = delta * u  # [B, L, C]
        grad_scaled = torch.mul(g, B.unsqueeze(2), out=buffer).sum(-1)  # [B, L, C]
        grad_B = torch.mul(g, scaled.unsqueeze(-1), out=buffer).sum(2)  # [B, L, N]
        grad_h0 = decay[:, 0] * g[:, 0] if h0 is not None else None
        # dLoss/d(delta A)_t = g_t * h_{t-1} * Abar_t, in place of g
        g[:, 1:] *= h[:, :-1]
        if h0 is None:
            g[:, 0] = 0
        else:
            g[:, 0] *= h0
        g *= decay
        del decay
        grad_delta = torch.mul(g, A, out=buffer).sum(-1) + grad_scaled * u
        grad_A = torch.mul(g, delta.unsqueeze(-1), out=buffer).sum((0, 1))  # [C, N]
        grad_u = grad_scaled * delta
        grad_D = None
        if D is not None:
            grad_u = grad_u + grad_y * D
            grad_D = (grad_y * u).sum((0, 1))
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_h0, None


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_state: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, chunked-parallel (see the module docstring).

    u, delta: [B, L, C] (delta already positive: softplus applied); A: [C, N]; B, C: [B, L, N]; D: [C];
    initial_state: h_{-1} [B, C, N] -> y [B, L, C] (and the last state h_{L-1} [B, C, N] when `return_state`).
    """
    require(u.shape == delta.shape, f"u and delta must share a shape, got {tuple(u.shape)} and {tuple(delta.shape)}")
    require(A.dim() == 2 and A.shape[0] == u.shape[-1], f"A must be [C={u.shape[-1]}, N], got {tuple(A.shape)}")
    if u.shape[1] == 0:
        y = torch.zeros_like(u)
        return (y, _zero_state(u, A, initial_state)) if return_state else y
    tensors = (t.contiguous() for t in (u, delta, A, B, C))
    y, last = _SelectiveScan.apply(*tensors, D, initial_state, chunk_size)
    return (y, last) if return_state else y


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan as an explicit recurrence over t (the definition). Same arguments as `selective_scan`."""
    h = _zero_state(u, A, initial_state)  # [B, C, N]
    outputs = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y = (h * C[:, t, None, :]).sum(-1)  # [B, C]
        outputs.append(y if D is None else y + D * u[:, t])
    y = torch.stack(outputs, 1) if outputs else u.new_zeros(u.shape)
    return (y, h) if return_state else y


def selective_step(
    h: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the recurrence: h [B, C, N], u, delta [B, C], B, C [B, N] -> (y [B, C], new h)."""
    h = torch.exp(delta.unsqueeze(-1) * A) * h + (delta * u).unsqueeze(-1) * B.unsqueeze(1)
    y = (h @ C.unsqueeze(-1)).squeeze(-1)
    return (y if D is None else y + D * u), h


def _zero_state(u: torch.Tensor, A: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
    if initial_state is not None:
        return initial_state
    return torch.zeros(u.shape[0], *A.shape, dtype=u.dtype, device=u.device)
