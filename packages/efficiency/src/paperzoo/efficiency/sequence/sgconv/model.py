"""SGConv, the Structured Global Convolution, as a `TokenMixer`.

"What Makes Convolutional Models Great on Long Sequence Modeling?" (Li, Cai, Zhang, Chen, Dey; arXiv:2210.09298,
https://arxiv.org/abs/2210.09298). The paper distils S4's success into two principles for a global convolution
kernel: (1) its parameters grow sub-linearly with the length, (2) its weights decay with the distance. SGConv builds
the kernel of each channel from `n_scales` learnable sub-kernels w_i of a fixed size d_k:

    k_i = alpha^i * Upsample(w_i, to length d_k * 2^max(i-1, 0)),   K = [k_0, k_1, ..., k_{n-1}] / Z,

so scale i >= 1 covers positions [d_k 2^(i-1), d_k 2^i): each scale is twice as long as the previous one (scale 1 as
long as scale 0) and alpha^i times smaller (alpha = 1/2). Z is a per-channel constant, the L2 norm of the kernel at
initialisation, so that the convolution starts norm-preserving. The layer is the reference's GConv block:

    y = Linear(GELU(K * x + D x))   (causal: K * x sums x_{<=i}; bidirectional: a second kernel sums x_{>i})

with the convolution computed by FFT in O(L log L).

Ablations of the paper's two principles are constructor switches:
- `multiscale=False`: one sub-kernel of d_k parameters, linearly interpolated to the whole kernel length (still
  sub-linear in L, but the same coarse resolution near 0 as far away);
- `dense=True`: a dense learnable kernel with one parameter per position (parameters proportional to L), the
  "global convolution" baseline that breaks principle (1);
- `decay=False`: no alpha^i. With a single-scale or dense kernel, `decay=True` multiplies position t by the same
  piecewise-constant envelope alpha^scale(t) the multi-scale kernel has, so the decay switch means the same thing
  for every parameterisation.

Unified view (arXiv:2302.06218): M is the Toeplitz matrix M[i, j] = K[i - j] (plus K'[j - i - 1] above the diagonal
when bidirectional) with D on the diagonal, and V x = x. A causal SGConv also has a step mode that keeps the past
inputs: exact, but its cost per token grows with the context like attention's key/value cache (a long convolution
has no finite state).

Deviations from the reference code (ctlllll/SGConv, `gconv_standalone.py`), all behaviour-preserving or documented:
- the reference computes Z from the kernel on the first forward pass and stores it; here Z is computed from the
  initial parameters in `__init__` (the same value as when the first forward pass precedes any update), so the
  module has no state that changes on first use;
- the reference writes the decay as multiplier^(n-1-i) with multiplier = 2, i.e. 2^(n-1) (1/2)^i: the constant
  2^(n-1) cancels in the normalisation, so `decay_rate` = alpha = 1/2 is the same kernel;
- its per-parameter learning rate for the kernels (0.001) is left to the optimizer configuration; its "learnable"
  power-law decay mode, "sum" mode and "cos" initialisation are not implemented (the paper's SGConv is "cat_randn").
- optional `glu=True` is the reference's LRA setting `postact: glu` (the output linear layer doubles its width and a
  GLU halves it).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.mixer import TokenMixer, register_mixer

INTERPOLATIONS = ("linear", "nearest")


def scale_lengths(kernel_dim: int, n_scales: int) -> list[int]:
    """Length of each scale's upsampled sub-kernel: d_k, d_k, 2 d_k, 4 d_k, ... (d_k * 2^max(i-1, 0))."""
    return [kernel_dim * 2 ** max(i - 1, 0) for i in range(n_scales)]


def default_n_scales(max_seq_len: int, kernel_dim: int) -> int:
    """The fewest scales whose concatenation covers `max_seq_len`: 1 + ceil(log2(L / d_k)), at least 1."""
    if max_seq_len <= kernel_dim:
        return 1
    return 1 + math.ceil(math.log2(max_seq_len / kernel_dim))


def decay_envelope(length: int, kernel_dim: int, decay_rate: float, dtype=None, device=None) -> torch.Tensor:
    """alpha^scale(t) for t < length, with scale(t) = 0 for t < d_k and 1 + floor(log2(t / d_k)) after: the decay
    the multi-scale kernel applies, written per position (used by the single-scale and dense ablations). [length]"""
    t = torch.arange(length, device=device, dtype=torch.float64)
    scale = torch.where(t < kernel_dim, 0.0, torch.floor(torch.log2(t.clamp_min(kernel_dim) / kernel_dim)) + 1)
    return (decay_rate**scale).to(dtype or torch.get_default_dtype())


def upsample(kernel: torch.Tensor, length: int, mode: str = "linear") -> torch.Tensor:
    """kernel [..., d] -> [..., length] by `F.interpolate` (linear: half-pixel centres, as the reference)."""
    if kernel.shape[-1] == length:
        return kernel
    shape = kernel.shape
    flat = kernel.reshape(-1, 1, shape[-1])
    return F.interpolate(flat, size=length, mode=mode).reshape(*shape[:-1], length)


def multiscale_kernel(sub_kernels, decay_rate: float | None, mode: str = "linear") -> torch.Tensor:
    """Concatenate the upsampled, decayed sub-kernels (not yet normalised).

    Args:
        sub_kernels: n tensors [..., d_k], scale 0 first.
        decay_rate: alpha, or None for no decay.
        mode: interpolation mode.

    Returns:
        [..., d_k * 2^(n-1)]: scale i upsampled to d_k * 2^max(i-1, 0) and multiplied by alpha^i.
    """
    kernel_dim = sub_kernels[0].shape[-1]
    pieces = []
    for i, (w, length) in enumerate(zip(sub_kernels, scale_lengths(kernel_dim, len(sub_kernels)), strict=True)):
        piece = upsample(w, length, mode)
        pieces.append(piece * decay_rate**i if decay_rate is not None else piece)
    return torch.cat(pieces, dim=-1)


def fft_conv(u: torch.Tensor, kernel: torch.Tensor, anticausal: torch.Tensor | None = None) -> torch.Tensor:
    """Linear convolution along the last axis by FFT, zero-padded to 2L so nothing wraps around.

    Args:
        u: [..., L] inputs.
        kernel: [..., L] causal taps: y_i += sum_{j <= i} kernel[i - j] u_j.
        anticausal: [..., L] optional taps on the future: y_i += sum_{j > i} anticausal[j - i - 1] u_j.

    Returns:
        y: [..., L] (broadcast over the leading axes of u and the kernels).
    """
    length = u.shape[-1]
    k = F.pad(kernel, (0, length))  # [..., 2L]
    if anticausal is not None:
        # anticausal[m] lands at index 2L - 1 - m == -(m + 1) mod 2L, i.e. it weighs u_{i + m + 1}.
        k = k + F.pad(anticausal.flip(-1), (length, 0))
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(k, n=2 * length), n=2 * length)
    return y[..., :length]


def toeplitz(kernel: torch.Tensor, length: int, anticausal: torch.Tensor | None = None) -> torch.Tensor:
    """The convolution of `fft_conv` as an explicit matrix: kernel [..., >= L] -> T [..., L, L] with
    T[i, j] = kernel[i - j] for j <= i and anticausal[j - i - 1] for j > i (zero when absent)."""
    index = torch.arange(length, device=kernel.device)
    offset = index[:, None] - index[None, :]  # [L, L], i - j
    lower = kernel[..., offset.clamp_min(0)] * (offset >= 0)
    if anticausal is None:
        return lower
    return lower + anticausal[..., (-offset - 1).clamp_min(0)] * (offset < 0)


@register_mixer("sgconv")
class SGConvMixer(TokenMixer):
    """Structured global convolution (SGConv) with the reference's GELU + linear output block.

    Args:
        dim: D, the model width (one kernel per channel and per `channels`).
        kernel_dim: d_k, the size of each scale's learnable sub-kernel (the reference's LRA configs use 1 for ListOps
            and 32 for Pathfinder; 64 by default).
        max_seq_len: the longest sequence the kernel covers; longer inputs see zero taps beyond it.
        n_scales: number of scales; default the fewest that cover `max_seq_len` (1 + ceil(log2(max_seq_len / d_k))).
        channels: kernels per input channel (the reference's "channels", heads of the convolution).
        bidirectional: a second kernel over the future, so position i sees the whole sequence.
        multiscale: the paper's multi-scale parameterisation; False = one sub-kernel of d_k taps interpolated to the
            whole length.
        decay: multiply scale i by decay_rate^i (or the same envelope per position for the ablations).
        decay_rate: alpha in (0, 1).
        dense: a dense learnable kernel of `max_seq_len` taps (parameters proportional to L); needs
            multiscale=False.
        interpolation: "linear" (the reference's default) or "nearest".
        glu: the output layer maps to 2D and a GLU halves it (the reference's LRA `postact: glu`).
        dropout: dropout after the GELU, in training.

    Shapes: x [B, L, D] -> [B, L, D]; C = channels * D in the materialised view.
    """

    def __init__(
        self,
        dim: int,
        kernel_dim: int = 64,
        max_seq_len: int = 2048,
        n_scales: int | None = None,
        channels: int = 1,
        bidirectional: bool = False,
        multiscale: bool = True,
        decay: bool = True,
        decay_rate: float = 0.5,
        dense: bool = False,
        interpolation: str = "linear",
        glu: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        require(dim > 0, f"SGConv width must be > 0, got {dim}")
        require(kernel_dim > 0, f"kernel_dim must be > 0, got {kernel_dim}")
        require(max_seq_len > 0, f"max_seq_len must be > 0, got {max_seq_len}")
        require(n_scales is None or n_scales > 0, f"n_scales must be > 0 (or None for the default), got {n_scales}")
        require(channels > 0, f"channels must be > 0, got {channels}")
        require(0.0 < decay_rate < 1.0, f"decay_rate (alpha) must be in (0, 1), got {decay_rate}")
        require(
            not (dense and multiscale),
            "dense=True is the dense-kernel ablation and replaces the multi-scale kernel: set multiscale=False",
        )
        require(interpolation in INTERPOLATIONS, f"interpolation must be linear or nearest, got {interpolation!r}")
        require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        self.dim, self.kernel_dim, self.channels = dim, kernel_dim, channels
        self.bidirectional, self.causal, self.supports_step = bidirectional, not bidirectional, not bidirectional
        self.multiscale, self.decay, self.decay_rate, self.dense = multiscale, decay, decay_rate, dense
        self.interpolation = interpolation
        self.n_scales = n_scales if n_scales is not None else default_n_scales(max_seq_len, kernel_dim)
        # Total taps: the multi-scale concatenation's length (>= max_seq_len), or max_seq_len for the dense kernel.
        self.kernel_length = max_seq_len if dense else kernel_dim * 2 ** (self.n_scales - 1)
        kernels = channels * (2 if bidirectional else 1)  # [causal kernels; anticausal kernels]
        if multiscale:
            self.sub_kernels = nn.ParameterList(
                nn.Parameter(torch.randn(kernels, dim, kernel_dim)) for _ in range(self.n_scales)
            )
        else:
            self.kernel = nn.Parameter(torch.randn(kernels, dim, self.kernel_length if dense else kernel_dim))
        self.skip = nn.Parameter(torch.randn(channels, dim))  # the reference's D
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(channels * dim, (2 if glu else 1) * dim)
        self.glu = glu
        # Z: each kernel's norm at initialisation (a buffer, so checkpoints keep the kernel the weights were trained
        # with). [kernels, D, 1]
        with torch.no_grad():
            self.register_buffer("kernel_norm", self._raw_kernel().norm(dim=-1, keepdim=True))

    # --- the kernel -------------------------------------------------------------------------------------------
    def _raw_kernel(self) -> torch.Tensor:
        """The un-normalised kernel of every (kernel, channel): [kernels, D, kernel_length]."""
        if self.multiscale:
            return multiscale_kernel(
                list(self.sub_kernels), self.decay_rate if self.decay else None, self.interpolation
            )
        kernel = upsample(self.kernel, self.kernel_length, self.interpolation)
        if self.decay:
            kernel = kernel * decay_envelope(
                self.kernel_length, self.kernel_dim, self.decay_rate, kernel.dtype, kernel.device
            )
        return kernel

    def kernels(self, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The normalised taps for a sequence of `length`: (causal [channels, D, L], anticausal or None), cut to L
        or padded with zeros beyond `kernel_length`."""
        k = self._raw_kernel() / self.kernel_norm
        k = k[..., :length] if k.shape[-1] >= length else F.pad(k, (0, length - k.shape[-1]))
        if self.bidirectional:
            causal, anticausal = k.split(self.channels, dim=0)
            return causal, anticausal
        return k, None

    # --- the fast path ----------------------------------------------------------------------------------------
    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """K * x + D x for every channel: x [B, L, D] -> [B, L, channels * D] (channel-major: c * D + d)."""
        batch, length, _ = x.shape
        causal, anticausal = self.kernels(length)  # [C, D, L]
        u = x.transpose(1, 2).unsqueeze(1)  # [B, 1, D, L]
        y = fft_conv(u, causal, anticausal) + u * self.skip[None, :, :, None]  # [B, C, D, L]
        return y.permute(0, 3, 1, 2).reshape(batch, length, self.channels * self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(x, self.convolve(x))

    # --- the materialised view --------------------------------------------------------------------------------
    def values(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, 1, self.channels)  # [B, L, C * D]: every channel convolves the same input

    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The Toeplitz matrix of the convolution with D on its diagonal; the same for every input. [B, C*D, L, L]"""
        batch, length, _ = x.shape
        causal, anticausal = self.kernels(length)
        matrix = toeplitz(causal, length, anticausal)  # [C, D, L, L]
        matrix = matrix + torch.diag_embed(self.skip[..., None].expand(-1, -1, length))
        return matrix.reshape(1, self.channels * self.dim, length, length).expand(batch, -1, -1, -1)

    def readout(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        y = self.output(self.dropout(self.activation(mixed)))
        return F.glu(y, dim=-1) if self.glu else y

    # --- step mode: the past inputs (a long convolution has no finite state) ---------------------------------
    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        return {"inputs": torch.zeros(batch_size, 0, self.dim, device=device, dtype=dtype)}

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """x: [B, D] -> [B, D]: y_t = sum_{s <= t} K[t - s] x_s + D x_t over the kept inputs (O(t) per token)."""
        require(self.causal, "a bidirectional SGConv has no step mode")
        inputs = torch.cat((state["inputs"], x[:, None]), dim=1)  # [B, t + 1, D]
        causal, _ = self.kernels(inputs.shape[1])  # [C, D, t + 1]
        mixed = torch.einsum("btd,cdt->bcd", inputs.flip(1), causal) + x[:, None] * self.skip  # [B, C, D]
        return self.readout(x, mixed.flatten(1)), {"inputs": inputs}

    def extra_repr(self) -> str:
        kind = "dense" if self.dense else ("multiscale" if self.multiscale else "single-scale")
        return (
            f"dim={self.dim}, kernel={kind}, kernel_dim={self.kernel_dim}, n_scales={self.n_scales}, "
            f"kernel_length={self.kernel_length}, decay={self.decay_rate if self.decay else None}, "
            f"channels={self.channels}, bidirectional={self.bidirectional}"
        )
