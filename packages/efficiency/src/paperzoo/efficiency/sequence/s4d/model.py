"""S4D as a `TokenMixer`: the diagonal state-space layer.

"On the Parameterization and Initialization of Diagonal State Space Models", Gu, Gupta, Goel and Re, NeurIPS 2022
(https://arxiv.org/abs/2206.11893), CATALOG 66.

Each of the H channels is a diagonal complex SSM, A = diag(lambda_n) with Re lambda_n < 0, learned B, C, D and
log dt (initialised log-uniform in [dt_min, dt_max]). Implemented, as in the paper and the reference code
(state-spaces/s4, `models/s4/s4d.py` and `SSMKernelDiag`):

- the initialisations S4D-Lin, S4D-Inv, S4D-LegS, S4D-Real and a random one (`ssm.s4d_init`);
- zero-order-hold (the paper's default) or bilinear discretisation (`ssm.discretize_diagonal`);
- the Vandermonde kernel K_k = 2 Re sum_n C_n Bbar_n Abar_n^k over N/2 conjugate pairs (`ssm.vandermonde_kernel`),
  applied by FFT convolution; bidirectional with a second C for classification;
- the recurrent mode x_k = Abar x_{k-1} + Bbar u_k, y_k = 2 Re(C x_k) + D u_k on the N/2 half state;
- the layer around it (`ssm.SSMConvolutionMixer`): y = K * u + D u, GELU, dropout, Linear(H, 2H), GLU.

Deviations: Re lambda is parameterised as -exp(.) and Im lambda freely (the reference's default transforms);
one (A, B) per channel (the reference's default n_ssm = H); B is learned (the minimal `s4d.py` fixes B = 1, the full
kernel learns it).
"""

import torch
from torch import nn

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.mixer import register_mixer
from paperzoo.efficiency.sequence.ssm import (
    DISCRETIZATIONS,
    S4D_INITS,
    SSMConvolutionMixer,
    complex_parameter,
    discretize_diagonal,
    log_dt_init,
    mark_ssm_parameter,
    s4d_init,
    vandermonde_kernel,
)


@register_mixer("s4d")
class S4DMixer(SSMConvolutionMixer):
    """The S4D layer: a diagonal SSM per channel, its Vandermonde kernel, and the S4 block's GELU and GLU output.

    Args:
        dim: H, the model width (one SSM per channel).
        d_state: N, the state size (even; N/2 conjugate pairs are stored).
        init: lin, inv, legs, real or random (see `ssm.s4d_init`).
        discretization: zoh or bilinear.
        bidirectional: add a reverse-time kernel (non-causal, no recurrent mode).
        dt_min, dt_max: range of the log-uniform step size initialisation.
        dropout: dropout after the activation.
        init_seed: seed of the random init (ignored by the structured ones); None draws from torch's global RNG.

    Shapes: x [B, L, H] -> [B, L, H]; C = H in the materialised view.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 64,
        init: str = "lin",
        discretization: str = "zoh",
        bidirectional: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
        init_seed: int | None = None,
    ):
        super().__init__(dim, bidirectional=bidirectional, dropout=dropout)
        require(d_state > 0 and d_state % 2 == 0, f"S4D d_state must be even and > 0, got {d_state}")
        require(init in S4D_INITS, f"S4D init must be one of {', '.join(S4D_INITS)}, got {init!r}")
        require(
            discretization in DISCRETIZATIONS,
            f"S4D discretization must be one of {', '.join(DISCRETIZATIONS)}, got {discretization!r}",
        )
        self.d_state, self.init, self.discretization = d_state, init, discretization
        generator = None if init_seed is None else torch.Generator().manual_seed(init_seed)
        eigenvalues, b = s4d_channels(init, d_state, dim, generator)  # [H, N/2]
        self.log_dt = mark_ssm_parameter(nn.Parameter(log_dt_init(dim, dt_min, dt_max)))  # [H]
        self.log_neg_real = mark_ssm_parameter(nn.Parameter((-eigenvalues.real).log().float()))  # [H, N/2]
        self.imag = mark_ssm_parameter(nn.Parameter(eigenvalues.imag.float()))  # [H, N/2]
        self.b = complex_parameter(b, ssm=True)  # [H, N/2, 2]
        self.c = complex_parameter(torch.randn(self.kernel_channels, dim, d_state // 2, dtype=torch.complex64))

    def ssm_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """dt [H], Lambda [H, N/2], B [H, N/2], C [K, H, N/2] (complex)."""
        eigenvalues = torch.complex(-self.log_neg_real.exp(), self.imag)
        return self.log_dt.exp(), eigenvalues, torch.view_as_complex(self.b), torch.view_as_complex(self.c)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Abar, Bbar [H, N/2] of the chosen discretisation."""
        dt, eigenvalues, b, _ = self.ssm_parameters()
        return discretize_diagonal(eigenvalues, b, dt.unsqueeze(-1).to(eigenvalues.dtype), self.discretization)

    def kernel(self, length: int) -> torch.Tensor:
        """K [K, H, length], K_k = 2 Re sum_n C_n Bbar_n Abar_n^k."""
        require(length > 0, f"S4D kernel length must be > 0, got {length}")
        dt, eigenvalues, _, c = self.ssm_parameters()
        abar, bbar = self.discrete()
        # log Abar is dt A exactly for ZOH (no branch cut); for bilinear any branch gives the same integer powers.
        log_abar = dt.unsqueeze(-1) * eigenvalues if self.discretization == "zoh" else abar.log()
        return vandermonde_kernel(c * bbar, log_abar, length)

    def ssm_initial_state(self, batch_size: int, device: torch.device | None) -> dict[str, torch.Tensor]:
        abar, bbar = self.discrete()
        x = torch.zeros(batch_size, self.dim, self.d_state // 2, dtype=abar.dtype, device=device)
        return {"x": x, "abar": abar, "bbar": bbar, "c": self.ssm_parameters()[3][0]}

    def ssm_step(self, u: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """x_k = Abar x_{k-1} + Bbar u_k; y_k = 2 Re(C x_k) (the conjugate half adds the conjugate). u [B, H]."""
        x = state["abar"] * state["x"] + state["bbar"] * u.unsqueeze(-1)  # [B, H, N/2]
        return 2 * (state["c"] * x).sum(-1).real, {**state, "x": x}


def s4d_channels(
    init: str, d_state: int, channels: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lambda, B) [channels, N/2] complex128: the structured inits are the same for every channel, the random one
    is drawn per channel."""

    if init != "random":
        eigenvalues, b = s4d_init(init, d_state)
        return eigenvalues.repeat(channels, 1), b.repeat(channels, 1)
    pairs = [s4d_init(init, d_state, generator) for _ in range(channels)]
    return torch.stack([e for e, _ in pairs]), torch.stack([b for _, b in pairs])
