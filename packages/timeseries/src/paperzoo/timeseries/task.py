"""`ForecastingTask`: the LightningModule every point forecaster of paperzoo-timeseries trains with.

A subclass builds `self.model`, an `nn.Module` mapping the lookback window to the forecast
(`past [B, L, C] -> [B, H, C]`), or overrides `forecast(batch)` when its model needs more of the batch (calendar
features, a resolution id). The loss is the MSE on the scaled future, as in the forecasting literature (Informer's
protocol: metrics are reported on standardised values); `<stage>/mse` and `<stage>/mae` are logged per epoch.

The batch contract (every forecasting datamodule of the package yields it):
    past [B, L, C] float, future [B, H, C] float, both scaled with statistics of the training split;
    optional past_time [B, L, F] and future_time [B, H, F] calendar features;
    optional resolution [B] int64, the sampling-resolution id of each window (corpus datamodules).
"""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask

Batch = dict[str, torch.Tensor]


class ForecastingTask(BaseTask):
    """Point forecasting with an MSE loss.

    Args:
        num_channels: C, linked from the datamodule by the `paperzoo` command.
        context_length: L, the lookback window (linked).
        prediction_length: H, the horizon (linked).
        optimizer, lr_scheduler: see `BaseTask`.

    Subclasses call `super().__init__(num_channels, context_length, prediction_length, optimizer, lr_scheduler)`,
    then `self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])`, then set `self.model`.
    """

    throughput_unit = "windows"
    model: nn.Module

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 96,
        prediction_length: int = 24,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        self.num_channels, self.context_length, self.prediction_length = num_channels, context_length, prediction_length
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.metrics = nn.ModuleDict({stage: metrics.clone(prefix=f"{stage}/") for stage in ("val", "test")})

    def forecast(self, batch: Batch) -> torch.Tensor:
        """The point forecast for the batch. [B, H, C]"""
        return self.model(batch["past"])

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        """past [B, L, C] -> forecast [B, H, C]."""
        return self.forecast({"past": past})

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        prediction = self.forecast(batch)
        loss = F.mse_loss(prediction, batch["future"])
        if stage in self.metrics:
            metrics = self.metrics[stage]
            metrics.update(prediction.detach().flatten(), batch["future"].flatten())
            self.log_dict(metrics, sync_dist=True)
        return loss

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The forecast next to its inputs (scaled), for plots and `paperzoo predict`."""
        return {"past": batch["past"], "future": batch["future"], "forecast": self.forecast(batch)}

    def count_items(self, batch: Any) -> int:
        return int(batch["past"].shape[0])
