"""`DuplexTask`: trains `DuplexStateModel` to emit the reference state token of every block (teacher forcing on
the oracle rendering of generated dialogues), as SALMONN-omni trains its LLM to emit `<think>` / `<shift>` per
block (https://arxiv.org/abs/2411.18138). Closed-loop turn-taking and barge-in scores are the claim check's job
(`duplex.check`), not the training loop's: they need the simulated user to react to the model."""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy

from paperzoo.core.errors import require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.speech.duplex.model import DuplexStateModel
from paperzoo.speech.duplex.scheduler import IGNORE, SHIFT, TOKENS


class DuplexTask(BaseTask):
    """Cross-entropy on the per-block state token (`<think>`, `<shift>`, `<speak>`; the token the current state
    rules out is masked), `<shift>` weighted by `shift_weight` because it is rare (one block per turn change).
    Logs `<stage>/token_acc` and `<stage>/shift_f1` (per-block F1 of `<shift>` at probability 0.5).

    Args:
        num_features: mel bins (linked from the datamodule).
        dim, num_layers, dropout: the `DuplexStateModel`.
        shift_weight: loss weight of `<shift>` blocks.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    throughput_unit = "dialogues"

    def __init__(
        self,
        num_features: int = 40,
        dim: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        shift_weight: float = 8.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        require(shift_weight > 0, f"shift_weight must be positive, got {shift_weight}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = DuplexStateModel(num_features, dim, num_layers, dropout=dropout)
        weight = torch.ones(len(TOKENS))
        weight[SHIFT] = shift_weight
        self.register_buffer("token_weight", weight, persistent=False)
        self.metrics = torch.nn.ModuleDict(
            {
                **{f"{s}_acc": MulticlassAccuracy(len(TOKENS), average="micro") for s in ("val", "test")},
                **{f"{s}_shift_f1": BinaryF1Score() for s in ("val", "test")},
            }
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked token logits [B, N, 3]."""
        logits, _ = self.model(batch["mic"], batch["playback"], batch["state"])
        return logits

    def loss(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), weight=self.token_weight, ignore_index=IGNORE)

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch)
        tokens = batch["tokens"]
        loss = self.loss(logits, tokens)
        if stage in ("val", "test"):
            valid = tokens != IGNORE
            predicted, target = logits.argmax(-1)[valid], tokens[valid]
            batch_size = tokens.shape[0]
            accuracy, f1 = self.metrics[f"{stage}_acc"], self.metrics[f"{stage}_shift_f1"]
            accuracy.update(predicted, target)
            f1.update((predicted == SHIFT).long(), (target == SHIFT).long())
            self.log(f"{stage}/token_acc", accuracy, batch_size=batch_size)
            self.log(f"{stage}/shift_f1", f1, batch_size=batch_size, prog_bar=True)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> Any:
        """Per-block `<shift>` probabilities [B, N] (teacher-forced on the batch's states)."""
        return self(batch).softmax(-1)[..., SHIFT]
