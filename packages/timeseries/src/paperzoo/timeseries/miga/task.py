"""`MIGATask`: trains MIGA or one of its baselines on daily cross-sections of stocks (CATALOG 17).

The loss is the MSE between the predicted and the cross-sectionally standardised next-period return of every
stock (the paper trains on next-period returns; the regression form is our choice, see model.py for what could not be
verified). Validation and test log `<stage>/ic`, `<stage>/rank_ic`, `<stage>/icir`, `<stage>/rank_icir` and the
top-k long-short figures `<stage>/long_short_annual`, `<stage>/long_short_sharpe` (see metrics.py), per epoch over
every day of the split.
"""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.timeseries.miga.features import NUM_FEATURES
from paperzoo.timeseries.miga.metrics import CrossSectionalMetrics
from paperzoo.timeseries.miga.model import VARIANTS, build_model

Batch = dict[str, torch.Tensor]
LOGGED = ("ic", "rank_ic", "icir", "rank_icir", "long_short_annual", "long_short_sharpe")


class MIGATask(BaseTask):
    """Next-period return prediction with MIGA ("miga"), its ablation without inner-group attention
    ("miga_no_attention"), the plain MoE ("moe") or the single model ("single").

    Args:
        variant: one of "miga", "miga_no_attention", "moe", "single".
        num_features: F, the datamodule's `num_features` (default: the price-factor set of features.py).
        hidden: D, the encoder and expert representation width.
        num_groups: G, expert groups.
        experts_per_group: M.
        top_k: experts kept per group (the plain MoE keeps G * top_k of all G * M).
        expert_hidden: the experts' inner width (default D).
        num_heads: heads of the inner-group attention.
        encoder_layers: layers of the shared MLP encoder.
        dropout: dropout in encoder and experts.
        long_short_k: stocks on each side of the long-short portfolio.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    throughput_unit = "days"

    def __init__(
        self,
        variant: str = "miga",
        num_features: int = NUM_FEATURES,
        hidden: int = 32,
        num_groups: int = 2,
        experts_per_group: int = 4,
        top_k: int = 2,
        expert_hidden: int | None = None,
        num_heads: int = 1,
        encoder_layers: int = 2,
        dropout: float = 0.0,
        long_short_k: int = 4,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        require(variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        require(long_short_k >= 1, f"long_short_k must be >= 1, got {long_short_k}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.variant, self.num_features = variant, num_features
        self.model: nn.Module = build_model(
            variant,
            num_features,
            hidden=hidden,
            num_groups=num_groups,
            experts_per_group=experts_per_group,
            top_k=top_k,
            expert_hidden=expert_hidden,
            num_heads=num_heads,
            encoder_layers=encoder_layers,
            dropout=dropout,
        )
        self.metrics = nn.ModuleDict({stage: CrossSectionalMetrics(long_short_k) for stage in ("val", "test")})

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, N, F] -> predicted standardised returns [B, N]."""
        if features.shape[-1] != self.num_features:
            raise ConfigError(
                f"the batch has {features.shape[-1]} features per stock but the model was built for "
                f"num_features={self.num_features}; set model.init_args.num_features to the datamodule's num_features"
            )
        return self.model(features)

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        prediction = self(batch["features"])  # [B, N]
        loss = F.mse_loss(prediction, batch["target"])
        if stage in self.metrics:
            self.metrics[stage].update(prediction, batch["returns"], batch["next_returns"])
        return loss

    def _log_epoch(self, stage: str) -> None:
        figures = self.metrics[stage].compute()
        self.log_dict({f"{stage}/{name}": figures[name] for name in LOGGED}, sync_dist=False)
        self.metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Predictions next to what they are scored against: `prediction`, `returns`, `next_returns` [B, N] and
        `day` [B] (the day's index in the datamodule's `panel.dates`)."""
        return {
            "prediction": self(batch["features"]),
            "returns": batch["returns"],
            "next_returns": batch["next_returns"],
            "day": batch["day"],
        }

    def count_items(self, batch: Any) -> int:
        return int(batch["features"].shape[0])
