"""`TTMTask`: pre-training and multi-level fine-tuning of Tiny Time Mixers (arXiv 2401.03955) with Lightning.

- `mode="pretrain"`: every parameter trains, channel-independent, on `CorpusDataModule(downsampling=True)` windows
  (univariate, with `resolution`, DRS-augmented).
- `mode="finetune"`: the model is rebuilt for the target dataset (optionally with a channel-mixing decoder and an
  exogenous mixer), the pre-trained weights of `pretrained` are loaded, the backbone is frozen and only the
  decoder, head and exogenous mixer train (the optimizer only sees those). Batches come from
  `ForecastingDataModule` (use `train_fraction: 0.05` for the paper's 5% few-shot protocol).
"""

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.timeseries.data.corpus import RESOLUTIONS, resolution_id
from paperzoo.timeseries.task import Batch, ForecastingTask
from paperzoo.timeseries.ttm.model import TinyTimeMixer

Mode = Literal["pretrain", "finetune"]


def pretrained_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The `TinyTimeMixer` weights in a Lightning checkpoint of `TTMTask` (keys `model.*`) or a plain state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"pre-trained TTM checkpoint {path} does not exist (run the pretrain config first)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise DataError(f"{path} holds neither a Lightning checkpoint nor a state dict")
    if any(key.startswith("model.") for key in state):
        state = {key[len("model.") :]: value for key, value in state.items() if key.startswith("model.")}
    return state


class TTMTask(ForecastingTask):
    """Tiny Time Mixers: pre-training (all parameters) or few-shot fine-tuning (frozen backbone).

    Args:
        num_channels, context_length, prediction_length: linked from the datamodule.
        mode: "pretrain" or "finetune".
        pretrained: a checkpoint of a pre-training run (Lightning `.ckpt` or a state-dict file); required in
            finetune mode. Its context/prediction/patch lengths and sizes must match this task's.
        resolution: the sampling resolution (one of `data.corpus.RESOLUTIONS`) of batches without `resolution`.
        decoder_channel_mixing, target_channels, exogenous_channels, exogenous_context: fine-tuning additions,
            see `TinyTimeMixer` (channel indices of the datamodule's table).
        patch_length ... resolution_prefix: architecture, see `TinyTimeMixer` (defaults: a 0.2M-parameter TTM
            for L = 64, H = 12 on a CPU).
        optimizer, lr_scheduler: see `BaseTask`.
    """

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 64,
        prediction_length: int = 12,
        mode: Mode = "pretrain",
        pretrained: str | None = None,
        resolution: str | None = None,
        decoder_channel_mixing: bool = False,
        target_channels: list[int] | None = None,
        exogenous_channels: list[int] | None = None,
        exogenous_context: int = 1,
        patch_length: int = 8,
        d_model: int = 64,
        num_layers: int = 2,
        adaptive_patching_levels: int = 3,
        expansion: int = 2,
        dropout: float = 0.1,
        head_dropout: float = 0.1,
        decoder_d_model: int = 32,
        decoder_num_layers: int = 2,
        decoder_adaptive_patching_levels: int = 0,
        resolution_prefix: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(num_channels, context_length, prediction_length, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        require(mode in ("pretrain", "finetune"), f"mode must be 'pretrain' or 'finetune', got {mode!r}")
        require(mode == "finetune" or pretrained is None, "pretrained= is only used in finetune mode")
        require(mode == "pretrain" or pretrained is not None, "finetune mode needs pretrained= (a pretrain checkpoint)")
        fine_tune_only = decoder_channel_mixing or bool(exogenous_channels) or target_channels is not None
        require(mode == "finetune" or not fine_tune_only, "channel mixing and exogenous channels are fine-tuning parts")
        self.mode = mode
        self.default_resolution = resolution_id(resolution) if resolution is not None else None
        self.model = TinyTimeMixer(
            context_length=context_length,
            prediction_length=prediction_length,
            patch_length=patch_length,
            d_model=d_model,
            num_layers=num_layers,
            adaptive_patching_levels=adaptive_patching_levels,
            expansion=expansion,
            dropout=dropout,
            head_dropout=head_dropout,
            decoder_d_model=decoder_d_model,
            decoder_num_layers=decoder_num_layers,
            decoder_adaptive_patching_levels=decoder_adaptive_patching_levels,
            resolution_prefix=resolution_prefix,
            num_resolutions=len(RESOLUTIONS),
            num_channels=num_channels if fine_tune_only else None,
            decoder_channel_mixing=decoder_channel_mixing,
            target_channels=target_channels,
            exogenous_channels=exogenous_channels,
            exogenous_context=exogenous_context,
        )
        if mode == "finetune":
            assert pretrained is not None
            self.model.load_pretrained(pretrained_state_dict(pretrained))
            self.model.freeze_backbone()

    def forecast(self, batch: Batch) -> torch.Tensor:
        past = batch["past"]
        resolution = batch.get("resolution")
        if resolution is None and self.model.backbone.prefix is not None:
            if self.default_resolution is None:
                raise ConfigError("batches carry no `resolution`: set the task's resolution= (e.g. 'H')")
            resolution = torch.full((past.shape[0],), self.default_resolution, dtype=torch.int64, device=past.device)
        return self.model(past, resolution, batch.get("future"))

    def targets(self, future: torch.Tensor) -> torch.Tensor:
        """The channels the model forecasts. [B, H, T]"""
        return future if self.model.target_channels is None else future[..., self.model.target_channels]

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        prediction, target = self.forecast(batch), self.targets(batch["future"])
        loss = F.mse_loss(prediction, target)
        if stage in self.metrics:
            metrics = self.metrics[stage]
            metrics.update(prediction.detach().flatten(), target.flatten())
            self.log_dict(metrics, sync_dist=True)
        return loss

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return {"past": batch["past"], "future": self.targets(batch["future"]), "forecast": self.forecast(batch)}

    def configure_optimizers(self) -> Any:
        # only trainable parameters: a frozen backbone must not even see weight decay
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        scheduler = self.scheduler_factory(optimizer)
        set_total_steps = getattr(scheduler, "set_total_steps", None)
        if set_total_steps is not None and getattr(scheduler, "total_steps", 0) is None:
            set_total_steps(int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
