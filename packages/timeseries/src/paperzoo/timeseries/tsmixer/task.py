"""Lightning tasks of TSMixer (arXiv 2306.09364): supervised forecasting and masked self-supervised pretraining.

- `TSMixerTask(ForecastingTask)`: trains `TSMixer` with the MSE on the scaled future; with `hierarchy_head=True`
  the training loss is the hierarchy loss (`model.hierarchy_loss`), validation/test report the forecast's MSE/MAE.
- `TSMixerPretrainTask`: trains `TSMixerPretrainer` (random patch masking, MSE on the masked patches).

Fine-tuning from pretraining: `TSMixerTask(pretrained_checkpoint="pretrain.ckpt", ...)` loads the backbone (and
RevIN) weights of a `TSMixerPretrainTask` checkpoint (or of a `TSMixerPretrainer` state dict saved with
`torch.save`) at the start of a fresh `fit` (not when resuming from a checkpoint of the fine-tuning run itself, and
not in `load_from_checkpoint`). The architecture arguments must match the pretraining run's (same patching, sizes,
mode). `freeze_backbone=True` trains only the head(s) (linear probing).
"""

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.errors import ConfigError
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.timeseries.task import Batch, ForecastingTask
from paperzoo.timeseries.tsmixer.model import Mode, Norm, TSMixer, TSMixerPretrainer, hierarchy_loss, load_backbone


def read_pretrained_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone/RevIN weights of a `TSMixerPretrainTask` checkpoint or a saved `TSMixerPretrainer` state dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained_checkpoint {str(path)!r} does not exist; expected a pretraining checkpoint file")
    try:
        # our own checkpoints hold hyperparameters (callables), so a full unpickle is needed; only load files you trust
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"pretrained_checkpoint {str(path)!r} is not a readable torch checkpoint: {error}") from error
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"pretrained_checkpoint {str(path)!r} holds no state dict")
    state = {k.removeprefix("model."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "revin."))}


class TSMixerTask(ForecastingTask):
    """TSMixer forecasting.

    Args:
        num_channels, context_length, prediction_length: linked from the datamodule.
        patch_length ... channel_gate_before_mlp: the architecture, see `TSMixer`.
        coherence_weight: weight of the hierarchy loss' coherence term MSE(agg(Ŷ), Ĥ).
        pretrained_checkpoint: a `TSMixerPretrainTask` checkpoint whose backbone initialises this model.
        freeze_backbone: train only the head(s) (linear probing after pretraining).
        optimizer, lr_scheduler: see `BaseTask`.
    """

    model: TSMixer

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 96,
        prediction_length: int = 24,
        patch_length: int = 8,
        patch_stride: int = 8,
        d_model: int = 16,
        num_layers: int = 3,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        head_dropout: float = 0.2,
        mode: Mode = "common_channel",
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        revin: bool = True,
        revin_affine: bool = False,
        hierarchy_head: bool = False,
        aggregation_length: int | None = None,
        hierarchy_aggregation: Literal["mean", "sum"] = "mean",
        coherence_weight: float = 1.0,
        channel_context: int | None = None,
        channel_gate_before_mlp: bool = False,
        pretrained_checkpoint: str | None = None,
        freeze_backbone: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(num_channels, context_length, prediction_length, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = TSMixer(
            num_channels,
            context_length,
            prediction_length,
            patch_length=patch_length,
            patch_stride=patch_stride,
            d_model=d_model,
            num_layers=num_layers,
            expansion_factor=expansion_factor,
            dropout=dropout,
            head_dropout=head_dropout,
            mode=mode,
            gated_attn=gated_attn,
            norm=norm,
            revin=revin,
            revin_affine=revin_affine,
            hierarchy_head=hierarchy_head,
            aggregation_length=aggregation_length,
            hierarchy_aggregation=hierarchy_aggregation,
            channel_context=channel_context,
            channel_gate_before_mlp=channel_gate_before_mlp,
        )
        self.aggregation_length = aggregation_length or patch_length
        self.hierarchy_aggregation, self.coherence_weight = hierarchy_aggregation, coherence_weight
        self.pretrained_checkpoint, self.freeze_backbone = pretrained_checkpoint, freeze_backbone
        if freeze_backbone:
            self.model.backbone.requires_grad_(False)

    def load_pretrained(self, source: str | Path | TSMixerPretrainer | dict[str, torch.Tensor]) -> None:
        """Initialise the backbone (and RevIN) from a pretraining checkpoint path, pretrainer or state dict."""
        if isinstance(source, (str, Path)):
            source = read_pretrained_state(source)
        load_backbone(self.model, source)

    def setup(self, stage: str) -> None:
        # fresh fits only: a resumed fine-tuning run restores its own (already fine-tuned) weights afterwards anyway
        resuming = getattr(self._trainer, "ckpt_path", None) is not None
        if stage == "fit" and self.pretrained_checkpoint and not resuming:
            self.load_pretrained(self.pretrained_checkpoint)

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        if not self.model.has_hierarchy_head:
            return super().step(batch, stage)
        output = self.model.predict(batch["past"])
        if stage in self.metrics:
            metrics = self.metrics[stage]
            metrics.update(output.forecast.detach().flatten(), batch["future"].flatten())
            self.log_dict(metrics, sync_dist=True)
        if stage == "train":
            return hierarchy_loss(
                output, batch["future"], self.aggregation_length, self.hierarchy_aggregation, self.coherence_weight
            )
        return F.mse_loss(output.forecast, batch["future"])


class TSMixerPretrainTask(BaseTask):
    """Masked self-supervised pretraining of the TSMixer backbone (MSE on the masked patches).

    Args:
        num_channels, context_length: linked from the datamodule (its futures are ignored).
        mask_ratio: fraction of the patches masked in each series.
        channel_consistent_masking: mask the same patches in all channels of a window.
        other arguments: the backbone, see `TSMixer` (they must match the fine-tuning task's).
    """

    throughput_unit = "windows"
    model: TSMixerPretrainer

    def __init__(
        self,
        num_channels: int = 1,
        context_length: int = 96,
        patch_length: int = 8,
        patch_stride: int = 8,
        d_model: int = 16,
        num_layers: int = 3,
        expansion_factor: int = 2,
        dropout: float = 0.2,
        head_dropout: float = 0.2,
        mode: Mode = "common_channel",
        gated_attn: bool = True,
        norm: Norm = "LayerNorm",
        revin: bool = True,
        revin_affine: bool = False,
        mask_ratio: float = 0.4,
        channel_consistent_masking: bool = True,
        channel_gate_before_mlp: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.num_channels, self.context_length = num_channels, context_length
        self.model = TSMixerPretrainer(
            num_channels,
            context_length,
            patch_length=patch_length,
            patch_stride=patch_stride,
            d_model=d_model,
            num_layers=num_layers,
            expansion_factor=expansion_factor,
            dropout=dropout,
            head_dropout=head_dropout,
            mode=mode,
            gated_attn=gated_attn,
            norm=norm,
            revin=revin,
            revin_affine=revin_affine,
            mask_ratio=mask_ratio,
            channel_consistent_masking=channel_consistent_masking,
            channel_gate_before_mlp=channel_gate_before_mlp,
        )

    def forward(self, past: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(past)

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        loss = self.model(batch["past"])["loss"]
        if stage != "train":
            self.log(f"{stage}/masked_mse", loss, sync_dist=True)
        return loss

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self.model(batch["past"])

    def count_items(self, batch: Any) -> int:
        return int(batch["past"].shape[0])
