"""The Mamba block as a `TokenMixer` (registered as "mamba").

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu and Dao, arXiv:2312.00752,
https://arxiv.org/abs/2312.00752), Figure 3 and Section 3.4, as the reference `mamba_simple.Mamba` builds it:

    x, z = in_proj(x).chunk(2)                           [B, L, E] each, E = expand * D
    u = silu(causal depthwise conv1d_k(x))               k = d_conv = 4
    dt, B, C = x_proj(u).split(dt_rank, N, N)
    delta = softplus(dt_proj(dt))                        [B, L, E]
    y = selective_scan(u, delta, A = -exp(A_log), B, C, D)
    out = out_proj(y * silu(z))

Initialisation is the reference's: dt_proj weight uniform in +-dt_rank^-0.5 * dt_scale (or constant), dt_proj bias
the inverse softplus of dt ~ log-uniform in [dt_min, dt_max] (floored at dt_init_floor), A_log = log(n + 1) for
n = 0..N-1 in every channel (S4D-Real), D = 1, no biases on the projections, a biased conv. Parameter names
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) and shapes are those of mamba_ssm, transformers'
`MambaMixer` and mambapy's `MambaBlock`, so their state dicts load as they are.

Deviations: no fused CUDA kernel (the scan is `scan.selective_scan`, chunked-parallel PyTorch); the model-level
re-scaling of out_proj by 1/sqrt(n_layers) in the reference's `_init_weights` is not applied here (the block does
not know the depth); the residual/norm wrapper is `SequenceModel`'s pre-norm LayerNorm block (the reference uses
RMSNorm), with `mlp_ratio=0` for Mamba's MLP-free architecture.

Materialised view (paper 110's unified view, arXiv:2302.06218): values are the post-conv activations u [B, L, E],
M[b, c, i, j] = sum_n C_i[n] prod_{k=j+1..i} Abar_k[c, n] Bbar_j[c, n] for j <= i (Bbar_j = delta_j[c] B_j[n]) plus
D_c on the diagonal, and the readout is out_proj(mixed * silu(z)). Step mode keeps the last d_conv - 1 conv inputs
and the SSM state h [B, E, N]: constant cost per generated token.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.mamba.scan import selective_scan, selective_scan_ref, selective_step
from paperzoo.efficiency.sequence.mixer import TokenMixer, register_mixer

SCANS = ("parallel", "sequential")


@register_mixer("mamba")
class MambaMixer(TokenMixer):
    """The Mamba (S6) block.

    Args:
        dim: D, the model width.
        d_state: N, the SSM state size per channel (16 in the paper).
        d_conv: width of the causal depthwise convolution (4).
        expand: E / D (2).
        dt_rank: rank of the delta projection; "auto" = ceil(D / 16).
        dt_min, dt_max: range of the initial step sizes (log-uniform).
        dt_init: "random" (uniform dt_proj weight) or "constant".
        dt_scale: scales the dt_proj weight init.
        dt_init_floor: smallest initial step.
        conv_bias: bias on the convolution (True in the reference).
        bias: biases on in_proj and out_proj (False in the reference).
        scan: "parallel" (chunked scan, the default) or "sequential" (the reference loop).
        chunk_size: chunk length of the parallel scan (default about sqrt(L)).

    Shapes: x [B, L, D] -> [B, L, D]; C = E in the materialised view.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        scan: str = "parallel",
        chunk_size: int | None = None,
    ):
        super().__init__()
        require(dim > 0 and d_state > 0 and d_conv > 0 and expand > 0, "dim, d_state, d_conv and expand must be > 0")
        require(
            dt_rank == "auto" or (isinstance(dt_rank, int) and dt_rank > 0),
            f"dt_rank must be 'auto' or > 0, got {dt_rank!r}",
        )
        require(0 < dt_min <= dt_max, f"need 0 < dt_min <= dt_max, got {dt_min} and {dt_max}")
        require(dt_init in ("random", "constant"), f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        require(scan in SCANS, f"scan must be one of {', '.join(SCANS)}, got {scan!r}")
        self.dim, self.d_state, self.d_conv = dim, d_state, d_conv
        self.d_inner = expand * dim
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan, self.chunk_size = scan, chunk_size
        self.causal = True
        self.supports_step = True

        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=bias)

        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, std)
            else:
                nn.init.uniform_(self.dt_proj.weight, -std, std)
            log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            dt = torch.exp(log_dt).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]  # the reference's marker
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # S4D-Real: A_n = -(n + 1)
        self.A_log = nn.Parameter(torch.log(A))  # [E, N]
        self.D = nn.Parameter(torch.ones(self.d_inner))  # [E]
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

    # --- the shared pieces ------------------------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, D] -> (u = silu(conv(x_in)) [B, L, E], gate z [B, L, E])."""
        length = x.shape[1]
        x_in, z = self.in_proj(x).chunk(2, dim=-1)
        u = self.conv1d(x_in.transpose(1, 2))[..., :length].transpose(1, 2)  # causal: drop the right padding
        return F.silu(u), z

    def _selection(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """u [..., E] -> (delta [..., E], A [E, N], B [..., N], C [..., N])."""
        dt, B, C = self.x_proj(u).split((self.dt_rank, self.d_state, self.d_state), dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        return delta, -torch.exp(self.A_log), B, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self._inputs(x)
        delta, A, B, C = self._selection(u)
        if self.scan == "sequential":
            y = selective_scan_ref(u, delta, A, B, C, self.D)
        else:
            y = selective_scan(u, delta, A, B, C, self.D, chunk_size=self.chunk_size)  # [B, L, E]
        return self.out_proj(y * F.silu(z))

    # --- the materialised view --------------------------------------------------------------------------------
    def values(self, x: torch.Tensor) -> torch.Tensor:
        return self._inputs(x)[0]

    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        u, _ = self._inputs(x)
        delta, A, B, C = self._selection(u)
        length = x.shape[1]
        elapsed = delta.cumsum(1)  # [B, L, E]: sum_{k<=i} delta_k
        gap = elapsed.unsqueeze(2) - elapsed.unsqueeze(1)  # [B, i, j, E] = sum_{k=j+1..i} delta_k
        past = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        log_decay = gap.unsqueeze(-1) * A  # [B, i, j, E, N]
        decay = torch.where(past[None, :, :, None, None], log_decay, float("-inf")).exp()
        bbar = delta.unsqueeze(-1) * B.unsqueeze(2)  # [B, j, E, N]
        weights = torch.einsum("bin,bijcn,bjcn->bcij", C, decay, bbar)
        eye = torch.eye(length, dtype=weights.dtype, device=x.device)
        return weights + self.D.view(1, -1, 1, 1) * eye  # [B, E, L, L]: the skip D u_i on the diagonal

    def readout(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        z = self.in_proj(x).chunk(2, dim=-1)[1]
        return self.out_proj(mixed * F.silu(z))

    # --- step mode: conv cache + SSM state --------------------------------------------------------------------
    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        """{"conv": the last d_conv - 1 conv inputs [B, E, d_conv - 1], "ssm": h [B, E, N]}, both zero."""
        conv = torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype)
        return {"conv": conv, "ssm": ssm}

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """x [B, D] -> [B, D]; the state keeps its size, so every token costs the same."""
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # [B, E] each
        window = torch.cat((state["conv"], x_in.unsqueeze(-1)), dim=-1)  # [B, E, d_conv]
        u = (window * self.conv1d.weight.squeeze(1)).sum(-1)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        delta, A, B, C = self._selection(u)
        y, h = selective_step(state["ssm"], u, delta, A, B, C, self.D)
        return self.out_proj(y * F.silu(z)), {"conv": window[..., 1:], "ssm": h}
