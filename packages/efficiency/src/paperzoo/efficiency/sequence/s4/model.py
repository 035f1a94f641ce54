"""S4 as a `TokenMixer`: the DPLR state-space layer with the HiPPO-LegS initialisation.

"Efficiently Modeling Long Sequences with Structured State Spaces", Gu, Goel and Re, ICLR 2022
(https://arxiv.org/abs/2111.00396), CATALOG 44.

Each of the H channels is a single-input single-output SSM with state size N whose state matrix is diagonal plus
low rank, A = Lambda - P P^* (S4 Theorem 1: HiPPO-LegS is unitarily equivalent to this form), discretised with
the bilinear transform. Implemented, as in the paper and the reference code (state-spaces/s4, `SSMKernelDPLR`):

- HiPPO-LegS initialisation of Lambda, P and B (`ssm.nplr_legs`), one member of each conjugate pair stored
  (N/2 numbers), log-uniform dt in [dt_min, dt_max], complex normal C;
- the kernel of length L from the truncated generating function sum_{k<L} C Abar^k Bbar omega^k, evaluated at the
  L-th roots of unity: with C~ = C (I - Abar^L) it equals 2/(1+omega) C~ (g(omega) - A)^{-1} B with
  g = 2/dt (1-omega)/(1+omega) (S4 Lemma C.3), the resolvent of the DPLR matrix by the Woodbury identity and four
  Cauchy kernels (S4 Algorithm 1), then an inverse FFT. C~ is the trained parameter (S4 Section 3.3), attuned to
  the length `l_max`; at omega = -1 (the Nyquist bin of an even length), where g is infinite, the exact limit
  dt/2 C~ B is used instead of the reference code's reliance on rounding;
- FFT convolution for training (`ssm.fft_conv`), bidirectional with a second C (the reference code's two-channel
  kernel) for classification;
- the recurrent mode: x_k = Abar x_{k-1} + Bbar u_k with the bilinear Abar applied in O(N) through the Woodbury
  identity (the reference code's "linear" step), and C = C~ (I - Abar^{l_max})^{-1} recovered once per
  `initial_state`; the step state holds both conjugate halves (N numbers), since P P^* couples them;
- the layer around it (`ssm.SSMConvolutionMixer`): y = K * u + D u, GELU, dropout, Linear(H, 2H), GLU.

Deviations: rank 1 (LegS) only; one (Lambda, P, B) per channel (the reference's default n_ssm = H); sequences
longer than `l_max` get a kernel of the next doubled length by C~_{2l} = C~_l (I + Abar^l) computed for that call,
where the reference code overwrites C~ in place; the kernel is always computed at `l_max` (or its doubling) and
truncated, as the reference does.
"""

import math

import torch
from torch import nn

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.mixer import register_mixer
from paperzoo.efficiency.sequence.ssm import (
    SSMConvolutionMixer,
    cauchy,
    complex_parameter,
    conj_full,
    discretize_dense,
    dplr_dense,
    log_dt_init,
    mark_ssm_parameter,
    matrix_power,
    nplr_legs,
)

S4_INITS = ("legs",)


@register_mixer("s4")
class S4Mixer(SSMConvolutionMixer):
    """The S4 layer: a DPLR SSM per channel, its convolution kernel by the Cauchy kernel, and the S4 block's GELU and
    GLU output.

    Args:
        dim: H, the model width (one SSM per channel).
        d_state: N, the state size (even; N/2 conjugate pairs are stored).
        l_max: the kernel length C~ is attuned to (the longest sequence expected; longer ones cost a dense doubling).
        bidirectional: add a reverse-time kernel (non-causal, no recurrent mode).
        init: initialisation of (Lambda, P, B): legs (HiPPO-LegS).
        dt_min, dt_max: range of the log-uniform step size initialisation.
        dropout: dropout after the activation.

    Shapes: x [B, L, H] -> [B, L, H]; C = H in the materialised view.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 64,
        l_max: int = 1024,
        bidirectional: bool = False,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
    ):
        super().__init__(dim, bidirectional=bidirectional, dropout=dropout)
        require(d_state > 0 and d_state % 2 == 0, f"S4 d_state must be even and > 0, got {d_state}")
        require(l_max > 0, f"S4 l_max must be > 0, got {l_max}")
        require(init in S4_INITS, f"S4 init must be one of {', '.join(S4_INITS)}, got {init!r}")
        self.d_state, self.l_max = d_state, l_max
        nplr = nplr_legs(d_state)
        half = d_state // 2
        self.log_dt = mark_ssm_parameter(nn.Parameter(log_dt_init(dim, dt_min, dt_max)))  # [H]
        self.log_neg_real = mark_ssm_parameter(nn.Parameter((-nplr.eigenvalues.real).log().float().repeat(dim, 1)))
        self.imag = mark_ssm_parameter(nn.Parameter(nplr.eigenvalues.imag.float().repeat(dim, 1)))  # [H, N/2]
        self.p = complex_parameter(nplr.p.repeat(dim, 1), ssm=True)  # [H, N/2, 2]
        self.b = complex_parameter(nplr.b.repeat(dim, 1), ssm=True)  # [H, N/2, 2]
        c = torch.randn(self.kernel_channels, dim, half, dtype=torch.complex64)  # C, complex normal
        self.c_tilde = complex_parameter(c)  # [K, H, N/2, 2]
        with torch.no_grad():  # the trained parameter is C~ = C (I - Abar^l_max) (S4 Section 3.3)
            c_full = conj_full(c)
            self.c_tilde.copy_(torch.view_as_real(c_full - self.row_times_abar_power(c_full, l_max))[..., :half, :])

    # --- parameters -------------------------------------------------------------------------------------------------
    def ssm_parameters(self) -> tuple[torch.Tensor, ...]:
        """dt [H], Lambda [H, N/2], P [H, N/2], B [H, N/2] (complex)."""
        eigenvalues = torch.complex(-self.log_neg_real.exp(), self.imag)
        p, b = (torch.view_as_complex(t) for t in (self.p, self.b))
        return self.log_dt.exp(), eigenvalues, p, b

    @property
    def c_tilde_complex(self) -> torch.Tensor:
        """C~ [K, H, N/2] complex."""
        return torch.view_as_complex(self.c_tilde)

    def state_matrix(self) -> torch.Tensor:
        """The dense full-state DPLR matrix diag(Lambda) - P P^* [H, N, N] (for tests and the slow paths)."""
        _, eigenvalues, p, _ = self.ssm_parameters()
        return dplr_dense(eigenvalues, p)

    def discrete_dense(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The bilinear Abar [H, N, N] and Bbar [H, N] on the full state (both conjugate halves), optionally cast."""
        dt, eigenvalues, p, b = self.ssm_parameters()
        if dtype is not None:
            complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            dt, eigenvalues, p, b = (
                dt.to(dtype),
                eigenvalues.to(complex_dtype),
                p.to(complex_dtype),
                b.to(complex_dtype),
            )
        return discretize_dense(dplr_dense(eigenvalues, p), conj_full(b), dt.to(eigenvalues.dtype), "bilinear")

    def output_matrix(self) -> torch.Tensor:
        """C = C~ (I - Abar^l_max)^{-1} on the full state [K, H, N] (the recurrent mode's output vector)."""
        c_tilde = self.c_tilde_complex
        abar = self.discrete_dense()[0]
        eye = torch.eye(self.d_state, dtype=abar.dtype, device=abar.device)
        lhs = (eye - matrix_power(abar, self.l_max)).transpose(-1, -2)  # C (I - Abar^l) = C~  <=>  lhs C^T = C~^T
        return torch.linalg.solve(lhs, conj_full(c_tilde).unsqueeze(-1)).squeeze(-1)

    def row_times_abar_power(self, row: torch.Tensor, power: int) -> torch.Tensor:
        """row Abar^power for full-state row vectors [..., H, N], one O(N) bilinear step at a time: each step is
        r -> r (I - dt/2 A)^{-1} (I + dt/2 A), the inverse applied by the Woodbury identity (A = Lambda - P Q,
        Q = P^*). Used for C~ = C (I - Abar^L) at init and for lengths beyond `l_max`, where dense powers of the
        [H, N, N] matrix would cost O(H N^3 log L)."""
        dt, eigenvalues, p, _ = self.ssm_parameters()
        lam, p = conj_full(eigenvalues).to(row.dtype), conj_full(p).to(row.dtype)  # [H, N]
        q, half_dt = p.conj(), (dt / 2).unsqueeze(-1).to(row.dtype)  # [H, 1]
        d = (1 - half_dt * lam).reciprocal()  # (I - dt/2 Lambda)^{-1}
        qd = q * d
        scale = half_dt / (1 + half_dt * (qd * p).sum(-1, keepdim=True))  # [H, 1]
        for _ in range(power):
            y = row * d - (row * d * p).sum(-1, keepdim=True) * scale * qd  # row (I - dt/2 A)^{-1}
            row = y + half_dt * (y * lam - (y * p).sum(-1, keepdim=True) * q)  # y (I + dt/2 A)
        return row

    # --- the convolution kernel -------------------------------------------------------------------------------------
    def kernel(self, length: int) -> torch.Tensor:
        """K [K, H, length]: the generating function at the roots of unity (Cauchy + Woodbury), then an inverse FFT."""
        require(length > 0, f"S4 kernel length must be > 0, got {length}")
        dt, eigenvalues, p, b = self.ssm_parameters()
        c_tilde = self.c_tilde_complex
        kernel_length = self.l_max
        if length > self.l_max:  # attune C~ to the next doubled length: C~_{2l} = C~_l (I + Abar^l)
            c_full = conj_full(c_tilde)
            while kernel_length < length:
                c_full = c_full + self.row_times_abar_power(c_full, kernel_length)
                kernel_length *= 2
            c_tilde = c_full[..., : self.d_state // 2]
        return dplr_kernel(dt, eigenvalues, p, b, c_tilde, kernel_length)[..., :length]

    # --- the recurrent mode -----------------------------------------------------------------------------------------
    def ssm_initial_state(self, batch_size: int, device: torch.device | None) -> dict[str, torch.Tensor]:
        """A zero full state [B, H, N] and the step constants (the reference code's `_setup_linear`)."""
        dt, eigenvalues, p, b = self.ssm_parameters()
        lam, p_full, b_full = conj_full(eigenvalues), conj_full(p), conj_full(b)  # [H, N]
        q_full = p_full.conj()
        two_over_dt = (2 / dt).unsqueeze(-1).to(lam.dtype)  # [H, 1]
        d = (two_over_dt - lam).reciprocal()  # (2/dt - Lambda)^{-1}
        return {
            "x": torch.zeros(batch_size, self.dim, self.d_state, dtype=lam.dtype, device=device),
            "d": d,
            "e": two_over_dt + lam,
            "p": p_full,
            "q": q_full,
            "b": b_full,
            "woodbury": 1 + (q_full * d * p_full).sum(-1, keepdim=True),  # 1 + Q^* D P [H, 1]
            "c": self.output_matrix()[0],  # [H, N]
        }

    def ssm_step(self, u: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """(2/dt - A) x_k = (2/dt + A) x_{k-1} + 2 B u_k, solved in O(N) per channel by the Woodbury identity."""
        x, d, p, q = state["x"], state["d"], state["p"], state["q"]
        v = state["e"] * x - p * (q * x).sum(-1, keepdim=True) + 2 * state["b"] * u.unsqueeze(-1)  # [B, H, N]
        dv = d * v
        x = dv - d * p * (q * dv).sum(-1, keepdim=True) / state["woodbury"]
        y = (state["c"] * x).sum(-1).real  # [B, H]
        return y, {**state, "x": x}


def dplr_kernel(
    dt: torch.Tensor,
    eigenvalues: torch.Tensor,
    p: torch.Tensor,
    b: torch.Tensor,
    c_tilde: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """The S4 kernel of the bilinear discretisation of A = diag(Lambda) - P P^* (S4 Algorithm 1).

    Args:
        dt: [H] step sizes.
        eigenvalues, p, b: Lambda, P, B [H, N/2] (one member of each conjugate pair).
        c_tilde: C~ = C (I - Abar^length) [K, H, N/2].
        length: L, the kernel length (C~ must be attuned to it).

    Returns: K [K, H, L] real, K_k = C Abar^k Bbar.
    """
    complex_dtype = eigenvalues.dtype
    m = torch.arange(length // 2 + 1, dtype=torch.float64, device=dt.device)
    omega = torch.polar(torch.ones_like(m), -2 * math.pi * m / length).to(complex_dtype)  # [M]
    nyquist = torch.zeros_like(m, dtype=torch.bool)
    if length % 2 == 0:
        nyquist[-1] = True  # omega = -1: g(omega) is infinite, handled by its limit below
    omega_safe = torch.where(nyquist, torch.zeros_like(omega), omega)
    dt_c = dt.to(complex_dtype).unsqueeze(-1)  # [H, 1]
    g = 2 / dt_c * (1 - omega_safe) / (1 + omega_safe)  # [H, M]
    q = p.conj()
    r_cb = cauchy(c_tilde * b, g, eigenvalues)  # C~ R B [K, H, M]
    r_cp = cauchy(c_tilde * p, g, eigenvalues)  # C~ R P
    r_qb = cauchy(q * b, g, eigenvalues)  # Q^* R B [H, M]
    r_qp = cauchy(q * p, g, eigenvalues)  # Q^* R P
    resolvent = r_cb - r_cp * r_qb / (1 + r_qp)  # C~ (g - A)^{-1} B, Woodbury
    k_f = resolvent * (2 / (1 + omega_safe))
    # At omega = -1: C~ (I + Abar)^{-1} Bbar = dt/2 C~ B exactly (sum over both conjugate halves).
    limit = (dt * (c_tilde * b).sum(-1).real).to(complex_dtype).unsqueeze(-1)  # [K, H, 1]
    k_f = torch.where(nyquist, limit, k_f)
    return torch.fft.irfft(k_f, n=length)  # [K, H, L]
