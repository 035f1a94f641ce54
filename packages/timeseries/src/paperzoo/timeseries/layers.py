"""Layers shared by the forecasters of paperzoo-timeseries: reversible instance normalisation and patching.

- `RevIN`: Kim et al., "Reversible Instance Normalization for Accurate Time-Series Forecasting against
  Distribution Shift", ICLR 2022 (https://openreview.net/forum?id=cGDAkQo1C0p), as PatchTST (arXiv 2211.14730),
  PatchTSMixer (arXiv 2306.09364) and TTM (arXiv 2401.03955) use it: each window is standardised per channel with
  its own mean and (biased) standard deviation, optionally followed by a learnable per-channel affine map; the
  forecast goes through the inverse map.
- `patchify` / `num_patches`: PatchTST's patching. The series is padded at the end with `stride` copies of its last
  value ("we pad S repeated numbers of the last value to the end", Sec. 3.1), then cut into windows of
  `patch_length` every `stride` steps, giving N = floor((L - P) / S) + 2 patches.

Stateless by design: `RevIN.normalize` returns the statistics and `RevIN.denormalize` takes them back, so one
module can serve several windows at once and nothing leaks between calls (the reference code stores them on the
module between its "norm" and "denorm" calls).
"""

from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.errors import require


class InstanceStats(NamedTuple):
    """Per-window, per-channel statistics of `RevIN.normalize`."""

    mean: torch.Tensor  # [B, 1, C]
    std: torch.Tensor  # [B, 1, C]


class RevIN(nn.Module):
    """Reversible instance normalisation over the time axis.

    Args:
        num_channels: C; the affine parameters are per channel.
        affine: learn a per-channel scale (init 1) and shift (init 0) applied after standardising.
        eps: added to the variance before the square root (1e-5 as in the reference code), so a constant window
            gives zeros instead of NaNs.

    Shapes:
        normalize: x [B, L, C] -> ([B, L, C], InstanceStats)
        denormalize: y [B, H, C], InstanceStats -> [B, H, C]
    """

    def __init__(self, num_channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        require(num_channels > 0, f"RevIN needs num_channels > 0, got {num_channels}")
        require(eps > 0, f"RevIN needs eps > 0, got {eps}")
        self.num_channels, self.affine, self.eps = num_channels, affine, eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, InstanceStats]:
        mean = x.mean(dim=1, keepdim=True).detach()  # [B, 1, C]
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()  # [B, 1, C]
        z = (x - mean) / std
        if self.affine:
            z = z * self.weight + self.bias
        return z, InstanceStats(mean, std)

    def denormalize(self, y: torch.Tensor, stats: InstanceStats) -> torch.Tensor:
        if self.affine:
            # the reference divides by (weight + eps^2) to keep a zero weight finite; so do we
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * stats.std + stats.mean

    def extra_repr(self) -> str:
        return f"{self.num_channels}, affine={self.affine}, eps={self.eps}"


def num_patches(context_length: int, patch_length: int, stride: int, pad_end: bool = True) -> int:
    """N, the number of patches `patchify` cuts a window of `context_length` into."""
    require(patch_length > 0 and stride > 0, f"patch_length and stride must be positive, got {patch_length}, {stride}")
    require(
        patch_length <= context_length,
        f"patch_length {patch_length} is longer than the context_length {context_length}; expected at most that",
    )
    return (context_length - patch_length) // stride + 1 + (1 if pad_end else 0)


def patchify(x: torch.Tensor, patch_length: int, stride: int, pad_end: bool = True) -> torch.Tensor:
    """Cut each channel into (overlapping) patches, PatchTST's way.

    Args:
        x: the lookback window. [B, L, C]
        patch_length: P, steps per patch.
        stride: S, steps between the starts of consecutive patches.
        pad_end: append S copies of the last value first (the paper's "end" padding); without it, trailing steps
            that do not fill a patch are dropped.

    Returns:
        Patches, patch n of channel c covering padded steps [n*S, n*S + P). [B, C, N, P]
    """
    require(x.dim() == 3, f"patchify expects [batch, time, channels], got shape {tuple(x.shape)}")
    num_patches(x.shape[1], patch_length, stride, pad_end)  # validates
    x = x.transpose(1, 2)  # [B, C, L]
    if pad_end:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], stride)], dim=-1)  # [B, C, L + S]
    return x.unfold(dimension=-1, size=patch_length, step=stride)  # [B, C, N, P]
