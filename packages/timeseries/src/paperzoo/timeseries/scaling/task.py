"""`TSFMTask`: pretraining of the encoder-only or decoder-only TSFM of the scaling study (CATALOG 79).

Yao et al., "Towards Neural Scaling Laws for Time Series Foundation Models", ICLR 2025
(https://arxiv.org/abs/2410.12360). Training windows are the datamodule's past and future joined (the model sees one
sequence of patches); the last r ~ U(0.15, 0.5) of its patches are predicted (masked for the encoder, next-patch for the
decoder) and the loss is their negative log-likelihood under the Student-t mixture head. Validation and test forecast
the datamodule's horizon from its lookback and log `<stage>/nll` (per step, on the scaler-standardised values, so
series of any magnitude weigh alike) and the mean forecast's `<stage>/mse`, `<stage>/mae`.
"""

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.errors import require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.timeseries.scaling.model import (
    SIZES,
    Kind,
    PatchTSFM,
    forecast_distribution,
    sample_num_masked,
    to_patches,
    tsfm_nll,
)
from paperzoo.timeseries.task import Batch, ForecastingTask


def univariate(x: torch.Tensor) -> torch.Tensor:
    """Channels folded into the batch (the TSFMs are univariate, channel-independent). [B, T, C] -> [B * C, T]"""
    return x.transpose(1, 2).flatten(0, 1)


class TSFMTask(ForecastingTask):
    """Masked (encoder) or next-patch (decoder) pretraining of a `PatchTSFM` with its NLL.

    Args:
        num_channels, context_length, prediction_length: linked from the datamodule; L and H must be multiples of
            `patch_size`.
        kind: "encoder" or "decoder".
        size: a name of the size ladder `SIZES` ("xs", "s", "m", "l"), or None to use `dim`, `n_layers`, `n_heads`.
        patch_size: P.
        dim, n_layers, n_heads: the architecture when `size` is None.
        components: Student-t components of the head (4 in the paper).
        min_mask_ratio, max_mask_ratio: the range of the predicted fraction of each training window.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 64,
        prediction_length: int = 16,
        kind: Kind = "encoder",
        size: str | None = "s",
        patch_size: int = 8,
        dim: int = 32,
        n_layers: int = 2,
        n_heads: int = 2,
        components: int = 4,
        min_mask_ratio: float = 0.15,
        max_mask_ratio: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(num_channels, context_length, prediction_length, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        for name, length in (("context_length", context_length), ("prediction_length", prediction_length)):
            require(length > 0 and length % patch_size == 0, f"{name} {length} must be a multiple of {patch_size}")
        require(
            0.0 < min_mask_ratio <= max_mask_ratio < 1.0,
            f"mask ratios must satisfy 0 < min <= max < 1, got {min_mask_ratio}, {max_mask_ratio}",
        )
        if size is not None:
            require(size in SIZES, f"unknown TSFM size {size!r}; expected one of {', '.join(SIZES)}")
            dim, n_layers, n_heads = SIZES[size]
        max_patches = (context_length + prediction_length) // patch_size
        self.model = PatchTSFM(kind, patch_size, dim, n_layers, n_heads, max_patches, components)
        self.min_mask_ratio, self.max_mask_ratio = min_mask_ratio, max_mask_ratio

    def forecast(self, batch: Batch) -> torch.Tensor:
        """The mean forecast. [B, H, C]"""
        past = batch["past"]
        out = forecast_distribution(self.model, univariate(past), self.prediction_length)
        mean = out.mean().flatten(1)  # [B * C, H]
        return mean.unflatten(0, (past.shape[0], past.shape[2])).transpose(1, 2)

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        past, future = batch["past"], batch["future"]
        if stage == "train":
            patches = to_patches(univariate(torch.cat([past, future], dim=1)), self.model.patch_size)  # [B*C, N, P]
            num_predicted = sample_num_masked(
                patches.shape[0], patches.shape[1], None, self.min_mask_ratio, self.max_mask_ratio
            )
            return tsfm_nll(self.model, patches, num_predicted.to(patches.device), standardized=True)
        out = forecast_distribution(self.model, univariate(past), self.prediction_length)
        target = to_patches(univariate(future), self.model.patch_size)
        nll = out.nll(target, standardized=True).mean()
        mean = out.mean().flatten(1).unflatten(0, (past.shape[0], past.shape[2])).transpose(1, 2)  # [B, H, C]
        self.log(f"{stage}/nll", nll, sync_dist=True)
        if stage in self.metrics:
            metrics = self.metrics[stage]
            metrics.update(mean.detach().flatten(), future.flatten())
            self.log_dict(metrics, sync_dist=True)
        return nll

    def count_items(self, batch: Any) -> int:
        return int(batch["past"].shape[0])
