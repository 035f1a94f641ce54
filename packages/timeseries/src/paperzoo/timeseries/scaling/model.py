"""Tiny encoder-only and decoder-only time-series foundation models with a Student-t mixture head.

Yao et al., "Towards Neural Scaling Laws for Time Series Foundation Models", ICLR 2025
(https://arxiv.org/abs/2410.12360; reference code Qingrenn/TSFM-ScalingLaws, built on Moirai's uni2ts).

What is implemented, as the reference code defines it:

- input: a univariate series cut into non-overlapping patches of P steps; a std scaler (mean and standard deviation
  with Bessel's correction, `sqrt(var + 1e-5)`) computed per window over the *context* patches only (Moirai's
  `PackedStdScaler`), patches standardised by it and projected to the model width by a linear layer;
- backbone: pre-norm Transformer blocks with RMSNorm, SwiGLU and rotary position embeddings (core's
  `TransformerBlock`), a final RMSNorm;
- encoder-only (masked): the patches to forecast are replaced by a learned mask embedding and attention is
  bidirectional; pretraining masks the last `r` fraction of the window's patches, r ~ U(0.15, 0.5) per window
  (`MaskedPrediction`), and the loss is the NLL of the masked patches;
- decoder-only (autoregressive): causal attention, position t predicts patch t+1 (`NextTokenPrediction`); the loss is
  the NLL of the last `r` fraction of next-patch predictions, the scaler seeing the patches before them;
- probabilistic head: for every step of the predicted patch, a mixture of 4 Student-t distributions
  (`MixtureOutput([StudentTOutput] * 4)`): weights by a softmax over logits, df = 2 + softplus, loc as is,
  scale = softplus (at least float eps); the distribution is defined on the standardised scale and mapped back by the
  scaler's affine transform, whose log-Jacobian `log scale` enters the NLL in the data's units.

Known deviations: no query-key normalisation and RoPE on every head channel (the reference normalises q and k and
rotates half of them); no multivariate "any-variate" attention (the scaling study uses `max_dim: 1`, one variate per
sample, so it is unused there); no sequence packing (windows have equal length here); forecasting beyond one patch with
the decoder feeds back the mixture mean, where the reference feeds back the median of 100 samples (deterministic
evaluation); the decoder's scaler sees every patch before the first predicted one, where the reference's leaves out
the last of them.
"""

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.layers import CausalSelfAttention, TransformerBlock

Kind = Literal["encoder", "decoder"]

#: the reference's `PackedStdScaler(minimum_scale=1e-5)`, added to the variance
MIN_SCALE = 1e-5


class MixtureParams(NamedTuple):
    """Parameters of a K-component Student-t mixture for every predicted step, on the standardised scale."""

    logits: torch.Tensor  # [..., K] mixture weight logits
    df: torch.Tensor  # [..., K] degrees of freedom, > 2
    loc: torch.Tensor  # [..., K]
    scale: torch.Tensor  # [..., K], > 0


def student_t_log_prob(value: torch.Tensor, df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log density of Student's t, elementwise (broadcasting)."""
    z = (value - loc) / scale
    return (
        torch.lgamma((df + 1) / 2)
        - torch.lgamma(df / 2)
        - 0.5 * torch.log(df * math.pi)
        - torch.log(scale)
        - (df + 1) / 2 * torch.log1p(z * z / df)
    )


def mixture_log_prob(params: MixtureParams, value: torch.Tensor) -> torch.Tensor:
    """log p(value) under the mixture: logsumexp_k (log w_k + log t_k(value)). value [...] -> [...]"""
    log_weights = torch.log_softmax(params.logits, dim=-1)  # [..., K]
    component = student_t_log_prob(value.unsqueeze(-1), params.df, params.loc, params.scale)  # [..., K]
    return torch.logsumexp(log_weights + component, dim=-1)


def mixture_mean(params: MixtureParams) -> torch.Tensor:
    """The mixture mean sum_k w_k loc_k (finite because df > 2). [..., K] -> [...]"""
    return (torch.softmax(params.logits, dim=-1) * params.loc).sum(-1)


def mixture_distribution(params: MixtureParams) -> torch.distributions.MixtureSameFamily:
    """The same mixture as a `torch.distributions` object (for sampling, and as the reference the tests compare to)."""
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=params.logits),
        torch.distributions.StudentT(params.df, params.loc, params.scale),
    )


class StudentTMixtureHead(nn.Module):
    """Projects each token to the mixture parameters of the P steps of its patch (the reference's `DistrParamProj`).

    Args:
        dim: D, the model width.
        patch_size: P, steps per patch.
        components: K, Student-t components (4 in the paper).

    Shapes:
        h [B, N, D] -> MixtureParams with fields [B, N, P, K]
    """

    def __init__(self, dim: int, patch_size: int, components: int = 4):
        super().__init__()
        require(components > 0, f"a mixture needs at least one component, got {components}")
        self.patch_size, self.components = patch_size, components
        # one linear layer per parameter in the reference; one fused layer here (the same weights, concatenated)
        self.proj = nn.Linear(dim, 4 * components * patch_size)

    def forward(self, h: torch.Tensor) -> MixtureParams:
        out = self.proj(h).unflatten(-1, (4, self.patch_size, self.components))  # [B, N, 4, P, K]
        logits, df, loc, scale = out.unbind(-3)  # each [B, N, P, K]
        eps = torch.finfo(scale.dtype).eps
        return MixtureParams(logits, 2.0 + F.softplus(df), loc, F.softplus(scale).clamp_min(eps))


class SelfAttention(CausalSelfAttention):
    """Core's multi-head attention with RoPE, causal or bidirectional."""

    def __init__(self, dim: int, n_heads: int, max_seq_len: int, causal: bool):
        super().__init__(dim, n_heads, max_seq_len)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D] -> [B, T, D]."""
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq_len, 3, self.n_heads, dim // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, seq_len, dim))


class Block(TransformerBlock):
    """Core's pre-norm block (RMSNorm, RoPE attention, SwiGLU) with a choice of causal or bidirectional attention."""

    def __init__(self, dim: int, n_heads: int, max_seq_len: int, causal: bool):
        super().__init__(dim, n_heads, max_seq_len)
        self.attn = SelfAttention(dim, n_heads, max_seq_len, causal)


class TSFMOutput(NamedTuple):
    """The predictive distribution per token and the scaler that maps it to the data's units."""

    params: MixtureParams  # fields [B, N, P, K], on the standardised scale
    loc: torch.Tensor  # [B, 1, 1] scaler mean
    scale: torch.Tensor  # [B, 1, 1] scaler standard deviation

    def nll(self, target: torch.Tensor, standardized: bool = False) -> torch.Tensor:
        """-log p(target) per step. target [B, N, P] in the data's units -> [B, N, P].

        With `standardized`, the NLL of the standardised target (without the `log scale` Jacobian), which is
        comparable across series of any magnitude.
        """
        nll = -mixture_log_prob(self.params, (target - self.loc) / self.scale)
        return nll if standardized else nll + torch.log(self.scale)

    def mean(self) -> torch.Tensor:
        """The predictive mean in the data's units. [B, N, P]"""
        return mixture_mean(self.params) * self.scale + self.loc


def std_scaler(patches: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Bessel-corrected std over the context patches of each window (Moirai's `PackedStdScaler`).

    Args:
        patches: [B, N, P]
        context: which patches the statistics see. [B, N] bool

    Returns:
        (loc, scale), each [B, 1, 1], scale = sqrt(var + 1e-5).
    """
    weight = context.unsqueeze(-1).to(patches.dtype).expand_as(patches)  # [B, N, P]
    count = weight.sum(dim=(1, 2), keepdim=True)  # [B, 1, 1]
    loc = (patches * weight).sum(dim=(1, 2), keepdim=True) / count.clamp_min(1)
    var = (((patches - loc) ** 2) * weight).sum(dim=(1, 2), keepdim=True) / (count - 1).clamp_min(1)
    return loc, torch.sqrt(var + MIN_SCALE)


class PatchTSFM(nn.Module):
    """An encoder-only (masked) or decoder-only (autoregressive) patch Transformer with a Student-t mixture head.

    Args:
        kind: "encoder" (bidirectional, masked patches) or "decoder" (causal, next patch).
        patch_size: P, steps per patch.
        dim: D, model width.
        n_layers: Transformer blocks.
        n_heads: attention heads (D must divide by it).
        max_patches: longest sequence of patches (the rotary cache).
        components: Student-t components of the head.

    Shapes:
        patches [B, N, P], context [B, N] bool, mask [B, N] bool (encoder only) -> TSFMOutput with [B, N, P, K] fields.
        Encoder: token n's distribution is patch n's (used where `mask` is set).
        Decoder: token n's distribution is patch n+1's.
    """

    def __init__(
        self,
        kind: Kind = "encoder",
        patch_size: int = 8,
        dim: int = 32,
        n_layers: int = 2,
        n_heads: int = 2,
        max_patches: int = 64,
        components: int = 4,
    ):
        super().__init__()
        if kind not in ("encoder", "decoder"):
            raise ConfigError(f"kind must be 'encoder' or 'decoder', got {kind!r}")
        require(patch_size > 0, f"patch_size must be positive, got {patch_size}")
        require(n_layers > 0, f"n_layers must be positive, got {n_layers}")
        self.kind, self.patch_size, self.max_patches = kind, patch_size, max_patches
        self.in_proj = nn.Linear(patch_size, dim)
        if kind == "encoder":
            self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.02)
        causal = kind == "decoder"
        self.blocks = nn.ModuleList(Block(dim, n_heads, max_patches, causal) for _ in range(n_layers))
        self.norm = nn.RMSNorm(dim)
        self.head = StudentTMixtureHead(dim, patch_size, components)

    def forward(self, patches: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> TSFMOutput:
        require(
            patches.dim() == 3 and patches.shape[-1] == self.patch_size,
            f"expected patches [batch, patches, {self.patch_size}], got {tuple(patches.shape)}",
        )
        require(
            patches.shape[1] <= self.max_patches, f"{patches.shape[1]} patches exceed max_patches {self.max_patches}"
        )
        loc, scale = std_scaler(patches, context)
        h = self.in_proj((patches - loc) / scale)  # [B, N, D]
        if self.kind == "encoder":
            if mask is None:
                raise ConfigError("the encoder needs a mask [batch, patches] of the patches to predict")
            h = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(h.dtype), h)
        for block in self.blocks:
            h = block(h)
        return TSFMOutput(self.head(self.norm(h)), loc, scale)


# --- objectives ----------------------------------------------------------------------------------------------------
def to_patches(series: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Non-overlapping patches of a univariate window. [B, T] -> [B, T / P, P] (T must divide by P)."""
    require(
        series.dim() == 2 and series.shape[1] % patch_size == 0,
        f"expected windows [batch, T] with T divisible by the patch size {patch_size}, got {tuple(series.shape)}",
    )
    return series.unflatten(1, (series.shape[1] // patch_size, patch_size))


def tail_mask(num_patches: int, num_masked: torch.Tensor) -> torch.Tensor:
    """The last `num_masked[b]` of `num_patches` positions of each row. num_masked [B] -> [B, N] bool"""
    positions = torch.arange(num_patches, device=num_masked.device)
    return positions.unsqueeze(0) >= (num_patches - num_masked).unsqueeze(1)


def sample_num_masked(
    batch: int,
    num_positions: int,
    generator: torch.Generator | None = None,
    min_ratio: float = 0.15,
    max_ratio: float = 0.5,
) -> torch.Tensor:
    """max(1, round(r * N)) with r ~ U(min_ratio, max_ratio) per window, as the reference's mask. -> [B] int64"""
    ratio = min_ratio + (max_ratio - min_ratio) * torch.rand(batch, generator=generator)
    return (ratio * num_positions).round().clamp(1, num_positions - 1).long()


def tsfm_nll(
    model: PatchTSFM, patches: torch.Tensor, num_predicted: torch.Tensor, standardized: bool = False
) -> torch.Tensor:
    """Mean NLL per predicted step of the last `num_predicted[b]` patches of each window, given the patches before.

    The pretraining objective. Encoder: those patches are masked and predicted jointly. Decoder: each is predicted
    from the true patches before it (teacher forcing). The scaler sees only the patches before the predicted ones.

    Args:
        model: the TSFM.
        patches: [B, N, P]
        num_predicted: [B] int, at least 1 and at most N - 1.
        standardized: the NLL of standardised values (no `log scale` term; the same gradients).

    Returns:
        A scalar: the mean over predicted steps.
    """
    n = patches.shape[1]
    predicted = tail_mask(n, num_predicted.to(patches.device))  # [B, N]
    if model.kind == "encoder":
        out = model(patches, context=~predicted, mask=predicted)
        nll = out.nll(patches, standardized)  # [B, N, P]
        weight = predicted
    else:
        # input position t holds patch t and predicts patch t + 1
        out = model(patches[:, :-1], context=~predicted[:, :-1])
        nll = out.nll(patches[:, 1:], standardized)  # [B, N-1, P]
        weight = predicted[:, 1:]
    weight = weight.unsqueeze(-1).expand_as(nll).to(nll.dtype)
    return (nll * weight).sum() / weight.sum()


def forecast_distribution(model: PatchTSFM, past: torch.Tensor, horizon: int) -> TSFMOutput:
    """The predictive distribution of the next `horizon` steps after `past` (the evaluation of the scaling study).

    The encoder masks the future patches and predicts them jointly. The decoder predicts them one patch at a time,
    feeding back its mean forecast of each patch (never the true future). The scaler sees the past only.

    Args:
        past: [B, L], L a multiple of the patch size.
        horizon: H, a multiple of the patch size.

    Returns:
        The distribution of the future patches: fields [B, H / P, P, K].
    """
    p = model.patch_size
    require(horizon > 0 and horizon % p == 0, f"horizon {horizon} must be a positive multiple of the patch size {p}")
    context = to_patches(past, p)  # [B, Nc, P]
    batch, n_c, _ = context.shape
    n_f = horizon // p
    if model.kind == "encoder":
        patches = torch.cat([context, context.new_zeros(batch, n_f, p)], dim=1)
        predicted = tail_mask(n_c + n_f, torch.full((batch,), n_f, device=past.device))
        out = model(patches, context=~predicted, mask=predicted)
        return TSFMOutput(MixtureParams(*(t[:, n_c:] for t in out.params)), out.loc, out.scale)
    inputs, steps = context, []
    for step in range(n_f):
        seen = torch.arange(n_c + step, device=past.device) < n_c  # the fed-back patches stay out of the scaler
        out = model(inputs, context=seen.expand(batch, -1))
        last = TSFMOutput(MixtureParams(*(t[:, -1:] for t in out.params)), out.loc, out.scale)
        steps.append(last.params)
        inputs = torch.cat([inputs, last.mean()], dim=1)
    params = MixtureParams(*(torch.cat(fields, dim=1) for fields in zip(*steps, strict=True)))
    return TSFMOutput(params, out.loc, out.scale)


@torch.no_grad()
def forecast_nll(model: PatchTSFM, past: torch.Tensor, future: torch.Tensor, standardized: bool = True) -> torch.Tensor:
    """Mean NLL per step of `future` [B, H] given `past` [B, L], one value per window. -> [B]"""
    out = forecast_distribution(model, past, future.shape[1])
    return out.nll(to_patches(future, model.patch_size), standardized).mean(dim=(1, 2))


# --- builders ------------------------------------------------------------------------------------------------------
#: name -> (width, layers, heads); about 10k, 40k, 160k and 640k parameters with P = 8 (a x4 ladder, as the paper's)
SIZES: dict[str, tuple[int, int, int]] = {
    "xs": (16, 2, 1),
    "s": (32, 3, 2),
    "m": (64, 3, 4),
    "l": (128, 3, 8),
}


def tsfm(size: str = "s", kind: Kind = "encoder", patch_size: int = 8, max_patches: int = 64) -> PatchTSFM:
    """A TSFM of the size ladder `SIZES` ("xs", "s", "m", "l")."""
    if size not in SIZES:
        raise ConfigError(f"unknown TSFM size {size!r}; expected one of {', '.join(SIZES)}")
    dim, n_layers, n_heads = SIZES[size]
    return PatchTSFM(kind, patch_size, dim, n_layers, n_heads, max_patches)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
