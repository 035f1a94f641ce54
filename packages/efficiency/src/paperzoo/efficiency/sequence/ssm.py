"""The structured state-space (SSM) math shared by S4 (CATALOG 44) and S4D (CATALOG 66), and the S4 layer around it.

- "Efficiently Modeling Long Sequences with Structured State Spaces" (S4, arXiv:2111.00396);
- "On the Parameterization and Initialization of Diagonal State Space Models" (S4D, arXiv:2206.11893).

A continuous SSM x'(t) = A x(t) + B u(t), y(t) = C x(t) + D u(t) is discretised with step dt into
x_k = Abar x_{k-1} + Bbar u_k, y_k = C x_k + D u_k, which is the causal convolution y = K * u + D u with the kernel
K_k = C Abar^k Bbar. This module holds the pieces both papers use:

- the HiPPO-LegS matrix (S4 eq. 2) and its normal-plus-low-rank form A = V (Lambda - P P^*) V^* with the normal part
  diagonalised (S4 Theorem 1; `nplr_legs`), keeping one eigenvalue of each conjugate pair;
- the S4D initialisations of a diagonal A (S4D Section 4): S4D-Lin lambda_n = -1/2 + i pi n, S4D-Inv
  lambda_n = -1/2 + i (N/pi)(N/(2n+1) - 1), S4D-LegS (the diagonal part of the NPLR HiPPO), S4D-Real
  lambda_n = -(n+1), and "random" (random negative real and imaginary parts, the baseline of the HiPPO-vs-random
  comparisons);
- the log-uniform dt initialisation in [dt_min, dt_max];
- zero-order-hold and bilinear discretisation, for diagonal and for dense state matrices (the naive references);
- the Vandermonde kernel K_k = 2 Re sum_n C_n Bbar_n Abar_n^k (S4D eq. 6; conjugate symmetry halves N);
- the Cauchy kernel sum_n v_n / (z_m - w_n) (S4 Section 3.3), a vectorised version and a naive one-term-at-a-time
  loop kept for tests;
- FFT convolution, causal or two-sided (the bidirectional layers of LRA), and the Toeplitz matrix it applies;
- `SSMConvolutionMixer`, the S4 layer of the reference code as a `TokenMixer`: y = K * u + D u per channel, GELU,
  dropout, then a position-wise linear layer to 2 x width and a GLU; subclasses (S4, S4D) provide the kernel and
  the recurrent step.

Conventions: complex parameters are stored as real tensors [..., 2] (`torch.view_as_real`) so every optimizer and
`module.double()` handle them; states keep one member of each conjugate pair (N/2 numbers for state size N) unless
said otherwise. Shapes: H = channels (the model width), N = state size, L = length.
"""

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.mixer import TokenMixer

S4D_INITS = ("lin", "inv", "legs", "real", "random")
DISCRETIZATIONS = ("zoh", "bilinear")


# --- HiPPO-LegS and its normal-plus-low-rank form -------------------------------------------------------------------
def hippo_legs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS state matrix and input vector (S4 eq. 2), float64.

    A[i, k] = -sqrt(2i+1) sqrt(2k+1) for i > k, -(i+1) for i = k, 0 for i < k; B[i] = sqrt(2i+1).
    Returns A [N, N], B [N].
    """
    require(n > 0, f"the HiPPO state size must be > 0, got {n}")
    q = torch.arange(n, dtype=torch.float64)
    r = (2 * q + 1).sqrt()
    a = -(r[:, None] * r[None, :]).tril(-1) - torch.diag(q + 1)
    return a, r.clone()


def legs_rank_correction(n: int) -> torch.Tensor:
    """P [N] with P[i] = sqrt(i + 1/2): A + P P^T is -1/2 I plus a skew-symmetric matrix (S4 Section 3.1)."""
    return (torch.arange(n, dtype=torch.float64) + 0.5).sqrt()


@dataclass
class NPLR:
    """A = V (diag(Lambda) - P P^*) V^* and B = V B_diag, keeping one member of each conjugate pair.

    Attributes:
        eigenvalues: Lambda [N/2] complex128, imaginary parts > 0, sorted by them ascending; real parts -1/2.
        p: the low-rank factor in the eigenbasis, V^* P [N/2].
        b: the input vector in the eigenbasis, V^* B [N/2].
        v: the eigenvectors [N, N/2]; the full basis is [V, conj(V)] with [Lambda, conj(Lambda)].
    """

    eigenvalues: torch.Tensor
    p: torch.Tensor
    b: torch.Tensor
    v: torch.Tensor


def nplr_legs(n: int, b_clip: float | None = 2.0) -> NPLR:
    """The NPLR (DPLR after the unitary change of basis) form of HiPPO-LegS, in float64 (S4 Theorem 1).

    A + P P^T = -1/2 I + S with S skew-symmetric, so its eigenvalues are -1/2 + i mu with i mu the eigenvalues of S,
    computed by a Hermitian eigensolver on -i S. Conjugate pairs: the eigenvalues with mu > 0 are kept.

    Args:
        n: the state size N (even).
        b_clip: clip the imaginary part of V^* B to [-b_clip, b_clip], as the reference code does by default for
            stability (None: exact).
    """
    require(n > 0 and n % 2 == 0, f"the NPLR state size must be even and > 0 (conjugate pairs), got {n}")
    a, b = hippo_legs(n)
    p = legs_rank_correction(n)
    normal = a + p[:, None] * p[None, :]  # -1/2 I + S
    skew = (normal - normal.T) / 2
    mu, vectors = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # ascending
    keep = mu > 0
    require(int(keep.sum()) == n // 2, f"HiPPO-LegS with N={n} should have N/2 positive frequencies")
    mu, v = mu[keep], vectors[:, keep]
    eigenvalues = torch.complex(torch.full_like(mu, normal.diagonal().mean().item()), mu)
    b_diag = v.conj().T @ b.to(torch.complex128)
    if b_clip is not None:
        b_diag = torch.complex(b_diag.real, b_diag.imag.clamp(-b_clip, b_clip))
    return NPLR(eigenvalues, v.conj().T @ p.to(torch.complex128), b_diag, v)


def conj_full(x: torch.Tensor) -> torch.Tensor:
    """[..., N/2] -> [..., N]: a half-stored conjugate-symmetric vector with its conjugate half appended."""
    return torch.cat((x, x.conj()), dim=-1)


def dplr_dense(eigenvalues: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The full (both conjugate halves) DPLR matrix diag(Lambda) - P P^*. eigenvalues [..., N/2], p [..., r, N/2] or
    [..., N/2] -> [..., N, N] complex."""
    lam = conj_full(eigenvalues)
    p = conj_full(p if p.dim() > eigenvalues.dim() else p.unsqueeze(-2))  # [..., r, N]
    return torch.diag_embed(lam) - p.transpose(-1, -2) @ p.conj()


# --- S4D initialisations and dt -------------------------------------------------------------------------------------
def s4d_init(name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A diagonal state matrix and input vector for S4D (S4D Section 4), one member of each conjugate pair.

    Args:
        name: lin (lambda_n = -1/2 + i pi n), inv (lambda_n = -1/2 + i (N/pi)(N/(2n+1) - 1)), legs (the diagonal of
            the NPLR HiPPO-LegS, B = V^* B_LegS as in the reference code, which drops the paper's factor 1/2),
            real (lambda_n = -(n+1), B = 1), or random (Re lambda ~ -U(0, 1), Im lambda = exp(N(0, 1)), B = 1).
        n: the state size N (even); N/2 values are returned, n = 0..N/2-1.
        generator: randomness of the random init.

    Returns:
        eigenvalues [N/2] complex128 with negative real parts, b [N/2] complex128.
    """
    require(name in S4D_INITS, f"S4D init must be one of {', '.join(S4D_INITS)}, got {name!r}")
    require(n > 0 and n % 2 == 0, f"the S4D state size must be even and > 0 (conjugate pairs), got {n}")
    idx = torch.arange(n // 2, dtype=torch.float64)
    half = torch.full_like(idx, -0.5)
    ones = torch.ones(n // 2, dtype=torch.complex128)
    if name == "lin":
        return torch.complex(half, math.pi * idx), ones
    if name == "inv":
        return torch.complex(half, n / math.pi * (n / (2 * idx + 1) - 1)), ones
    if name == "legs":
        nplr = nplr_legs(n)
        return nplr.eigenvalues, nplr.b
    if name == "real":
        return torch.complex(-(idx + 1), torch.zeros_like(idx)), ones
    real = -torch.rand(n // 2, generator=generator, dtype=torch.float64)
    imag = torch.randn(n // 2, generator=generator, dtype=torch.float64).exp()
    return torch.complex(real.clamp(max=-1e-4), imag), ones


def log_dt_init(
    channels: int, dt_min: float = 1e-3, dt_max: float = 1e-1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log dt [channels], log-uniform in [dt_min, dt_max] (S4 and S4D Section 3)."""
    require(0 < dt_min <= dt_max, f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(channels, generator=generator, dtype=torch.float64)
    return (math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))).float()


# --- discretisation -------------------------------------------------------------------------------------------------
def discretize_diagonal(
    eigenvalues: torch.Tensor, b: torch.Tensor, dt: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discretise a diagonal SSM. eigenvalues, b [..., N], dt broadcastable to them -> (Abar, Bbar) [..., N].

    zoh: Abar = exp(dt A), Bbar = (Abar - 1) / A B; bilinear: Abar = (1 + dt A/2) / (1 - dt A/2),
    Bbar = dt B / (1 - dt A/2).
    """
    require(method in DISCRETIZATIONS, f"discretization must be one of {', '.join(DISCRETIZATIONS)}, got {method!r}")
    dta = dt * eigenvalues
    if method == "zoh":
        abar = dta.exp()
        return abar, (abar - 1) / eigenvalues * b
    return (1 + dta / 2) / (1 - dta / 2), dt * b / (1 - dta / 2)


def discretize_dense(a: torch.Tensor, b: torch.Tensor, dt: torch.Tensor, method: str) -> tuple[torch.Tensor, ...]:
    """Discretise a dense SSM (the naive reference). a [..., N, N], b [..., N], dt [...] -> Abar [..., N, N],
    Bbar [..., N]. zoh: Abar = expm(dt A), Bbar = A^{-1} (Abar - I) B; bilinear: Abar = (I - dt/2 A)^{-1}
    (I + dt/2 A), Bbar = (I - dt/2 A)^{-1} dt B."""
    require(method in DISCRETIZATIONS, f"discretization must be one of {', '.join(DISCRETIZATIONS)}, got {method!r}")
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    dt = torch.as_tensor(dt, dtype=a.dtype, device=a.device)[..., None, None]
    if method == "zoh":
        abar = torch.linalg.matrix_exp(dt * a)
        return abar, torch.linalg.solve(a, ((abar - eye) @ b.unsqueeze(-1))).squeeze(-1)
    left = eye - dt / 2 * a
    return torch.linalg.solve(left, eye + dt / 2 * a), torch.linalg.solve(left, (dt * b.unsqueeze(-1))).squeeze(-1)


def matrix_power(a: torch.Tensor, exponent: int) -> torch.Tensor:
    """a^exponent for a [..., N, N] by repeated squaring (differentiable)."""
    result = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    base = a
    while exponent > 0:
        if exponent & 1:
            result = result @ base
        exponent >>= 1
        if exponent:
            base = base @ base
    return result


def krylov_kernel(abar: torch.Tensor, bbar: torch.Tensor, c: torch.Tensor, length: int) -> torch.Tensor:
    """The naive kernel K_k = C Abar^k Bbar for k < length, by explicit powers. abar [..., N, N], bbar [..., N],
    c [..., N] -> [..., length] (complex; the real part is the kernel of a real system)."""
    out, x = [], bbar
    for _ in range(length):
        out.append((c * x).sum(-1))
        x = (abar @ x.unsqueeze(-1)).squeeze(-1)
    return torch.stack(out, -1)


# --- kernels --------------------------------------------------------------------------------------------------------
def vandermonde_kernel(c_bbar: torch.Tensor, log_abar: torch.Tensor, length: int) -> torch.Tensor:
    """K_k = 2 Re sum_n v_n Abar_n^k, k < length (S4D eq. 6), with v = C Bbar. c_bbar, log_abar [..., N/2] ->
    [..., length] real. Abar^k is exp(k log Abar): any branch of the logarithm gives the same integer powers."""
    powers = (log_abar.unsqueeze(-1) * torch.arange(length, device=log_abar.device, dtype=log_abar.real.dtype)).exp()
    return 2 * (c_bbar.unsqueeze(-2) @ powers).squeeze(-2).real


def cauchy_naive(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, conj: bool = True) -> torch.Tensor:
    """sum_n v_n / (z_m - w_n), one term at a time (the reference the vectorised kernel is tested against).

    v [..., N], z [..., M], w [..., N] (leading dims broadcastable) -> [..., M]. With `conj`, v and w are
    half-stored conjugate pairs and the conjugate halves are added: sum_n v_n/(z - w_n) + conj(v_n)/(z - conj(w_n)).
    """
    w = w.expand_as(v)
    out = torch.zeros(*v.shape[:-1], z.shape[-1], dtype=torch.promote_types(v.dtype, z.dtype), device=v.device)
    for n in range(v.shape[-1]):
        out = out + v[..., n, None] / (z - w[..., n, None])
        if conj:
            out = out + v[..., n, None].conj() / (z - w[..., n, None].conj())
    return out


def cauchy(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, conj: bool = True) -> torch.Tensor:
    """sum_n v_n / (z_m - w_n) for many v at once: the Cauchy matrix 1/(z_m - w_n) is built once per w and applied
    as a matrix product. v [..., N], z [..., M], w [..., N] (leading dims broadcastable) -> [..., M]."""
    if conj:
        v, w = conj_full(v), conj_full(w)
    matrix = (z.unsqueeze(-2) - w.unsqueeze(-1)).reciprocal()  # [..., N, M]
    return (v.unsqueeze(-2) @ matrix).squeeze(-2)


# --- convolution ----------------------------------------------------------------------------------------------------
def fft_conv(u: torch.Tensor, k: torch.Tensor, k_reverse: torch.Tensor | None = None) -> torch.Tensor:
    """y_i = sum_{j<=i} k[i-j] u_j (+ sum_{j>i} k_reverse[j-i-1] u_j when `k_reverse` is given), by FFT.

    The two-sided form packs both kernels into one of length 2L as the reference code does (its reverse kernel
    starts at offset 1, so the diagonal is counted once). u [..., L], k and k_reverse [..., >= L] (broadcastable)
    -> [..., L].
    """
    length = u.shape[-1]
    k = k[..., :length]
    if k_reverse is not None:
        k = F.pad(k, (0, length)) + F.pad(k_reverse[..., :length].flip(-1), (length, 0))
    n = 2 * length
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]


def toeplitz(k: torch.Tensor, length: int, k_reverse: torch.Tensor | None = None) -> torch.Tensor:
    """The matrix `fft_conv` applies: M[i, j] = k[i-j] for i >= j, k_reverse[j-i-1] for j > i (else 0).
    k, k_reverse [..., >= length] -> [..., length, length]."""
    idx = torch.arange(length, device=k.device)
    lag = idx[:, None] - idx[None, :]  # [L, L]
    lower = k[..., :length][..., lag.clamp(min=0)] * (lag >= 0)
    if k_reverse is None:
        return lower
    upper = k_reverse[..., :length][..., (-lag - 1).clamp(min=0)] * (lag < 0)
    return lower + upper


# --- optimizer groups -------------------------------------------------------------------------------------------------
def mark_ssm_parameter(parameter: nn.Parameter) -> nn.Parameter:
    """Tag a parameter of the state matrix, B or dt: the reference code trains these with a smaller learning rate
    and no weight decay (`ssm_param_groups`)."""
    parameter._ssm_parameter = True  # type: ignore[attr-defined]
    return parameter


def ssm_param_groups(
    parameters: Any, lr: float, ssm_lr: float = 1e-3, weight_decay: float = 0.01
) -> list[dict[str, Any]]:
    """Optimizer groups: the tagged SSM parameters with `ssm_lr` and no weight decay, the rest with `lr` and
    `weight_decay`. Use as `optimizer=lambda p: torch.optim.AdamW(ssm_param_groups(p, lr=...))`."""
    ssm, rest = [], []
    for p in parameters:
        (ssm if getattr(p, "_ssm_parameter", False) else rest).append(p)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if ssm:
        groups.append({"params": ssm, "lr": ssm_lr, "weight_decay": 0.0})
    return groups


class SSMAdamW(torch.optim.AdamW):
    """AdamW with the reference code's two groups (`ssm_param_groups`), usable from a config as the optimizer:
    `class_path: paperzoo.efficiency.sequence.ssm.SSMAdamW`, `init_args: {lr: 0.01, ssm_lr: 0.001}`."""

    def __init__(self, params: Any, lr: float = 1e-3, ssm_lr: float = 1e-3, weight_decay: float = 0.01, **kwargs: Any):
        super().__init__(ssm_param_groups(params, lr, ssm_lr, weight_decay), lr=lr, **kwargs)


def complex_parameter(value: torch.Tensor, ssm: bool = False) -> nn.Parameter:
    """A complex tensor stored as a real parameter [..., 2]; read it back with `torch.view_as_complex`."""
    parameter = nn.Parameter(torch.view_as_real(value.to(torch.complex64)).clone())
    return mark_ssm_parameter(parameter) if ssm else parameter


# --- the S4 layer as a token mixer ------------------------------------------------------------------------------------
class SSMConvolutionMixer(TokenMixer):
    """The layer of the S4 reference code around an SSM convolution kernel (S4 and S4D share it).

    y = K * u + D u per channel (K two-sided when bidirectional), then GELU, dropout, a position-wise
    Linear(D, 2D) and a GLU. Subclasses implement `kernel(length) -> [K, H, L]` (K = 1, or 2 when bidirectional:
    the forward and the reverse kernel) and, for the recurrent mode, `ssm_initial_state` and `ssm_step`.

    Materialised view (C = D channels): values = the input u itself, M[c, i, j] = K_c[i-j] for i >= j (+ D_c on the
    diagonal; bidirectional: the reverse kernel K'_c[j-i-1] above it), readout = GELU, dropout, linear, GLU.

    Args:
        dim: H, the model width (one SSM per channel).
        bidirectional: a second, reverse-time kernel (non-causal; for classification).
        dropout: dropout after the activation.
    """

    def __init__(self, dim: int, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        require(dim > 0, f"the SSM mixer width must be > 0, got {dim}")
        require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        self.dim, self.bidirectional = dim, bidirectional
        self.causal = not bidirectional
        self.supports_step = not bidirectional
        self.skip = nn.Parameter(torch.randn(dim))  # D
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(dim, 2 * dim)

    @property
    def kernel_channels(self) -> int:
        return 2 if self.bidirectional else 1

    @abc.abstractmethod
    def kernel(self, length: int) -> torch.Tensor:
        """The convolution kernel(s) [K, H, length] (real)."""

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, H] -> K * u + D u [B, L, H]: the SSM part of the layer."""
        u = x.transpose(1, 2)  # [B, H, L]
        k = self.kernel(u.shape[-1])  # [K, H, L]
        y = fft_conv(u, k[0], k[1] if self.bidirectional else None)
        return (y + u * self.skip.unsqueeze(-1)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(x, self.convolve(x))

    def values(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        k = self.kernel(length)  # [K, H, L]
        m = toeplitz(k[0], length, k[1] if self.bidirectional else None)  # [H, L, L]
        m = m + torch.diag_embed(self.skip.unsqueeze(-1).expand(-1, length))
        return m.unsqueeze(0).expand(x.shape[0], -1, -1, -1)

    def readout(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        return F.glu(self.output_linear(self.dropout(self.activation(mixed))), dim=-1)

    # --- recurrent mode ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def ssm_initial_state(self, batch_size: int, device: torch.device | None) -> Any:
        """The recurrent state before the first token (S4 and S4D each define theirs)."""

    @abc.abstractmethod
    def ssm_step(self, u: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """u [B, H] -> (C x_k [B, H] real, new state)."""

    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        require(not self.bidirectional, "a bidirectional SSM layer has no recurrent mode")
        return self.ssm_initial_state(batch_size, device)

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """x [B, H] -> ([B, H], state): x_k = Abar x_{k-1} + Bbar u_k, y_k = C x_k + D u_k, then the readout."""
        require(not self.bidirectional, "a bidirectional SSM layer has no recurrent mode")
        y, state = self.ssm_step(x, state)
        y = y.to(x.dtype) + self.skip * x
        return self.readout(x, y), state
