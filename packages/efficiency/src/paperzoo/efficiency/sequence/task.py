"""Lightning tasks over `SequenceModel`: sequence classification (LRA) and per-position prediction (diagnostics).

Batches are dicts from the paperzoo sequence datamodules:
- classification: {"tokens": [B, L] int64, "mask": [B, L] bool (True = real token), "label": [B] int64}; for
  two-sequence matching (LRA's document retrieval) tokens and mask are [B, 2, L] and both sides go through the same
  encoder, combined as [u, v, u * v, u - v] as in the LRA paper's dual-encoder setup;
- per-position: {"tokens": [B, L] int64, "targets": [B, L] int64, -100 where there is nothing to predict}.
"""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from paperzoo.core.errors import require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.efficiency.sequence.backbone import SequenceModel

IGNORE_INDEX = -100
POOLINGS = ("mean", "last", "first")


def pool(features: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """features [B, L, D], mask [B, L] (True = real token) -> [B, D]: masked mean, last real token, or first token."""
    if mask is None:
        mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    if pooling == "mean":
        weights = mask.to(features.dtype).unsqueeze(-1)
        return (features * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    if pooling == "last":
        last = mask.long().cumsum(1).argmax(1)  # index of the last real token
        return features[torch.arange(features.shape[0], device=features.device), last]
    return features[:, 0]


class SequenceClassificationTask(BaseTask):
    """Classifies whole sequences (or pairs of sequences) with a pooled `SequenceModel`; logs `{stage}/acc`.

    Args:
        vocab_size, num_classes: linked from the datamodule by the `paperzoo` command.
        dim, depth, mixer, mixer_args, mlp_ratio, dropout: the `SequenceModel`.
        pooling: mean (masked), last (last real token: use it with causal mixers) or first.
        paired: the inputs are pairs of sequences ([B, 2, L], LRA's document matching).
        optimizer, lr_scheduler: see `BaseTask`.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        num_classes: int = 2,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "attention",
        mixer_args: dict[str, Any] | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pooling: str = "mean",
        paired: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        require(pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        require(num_classes > 1, f"num_classes must be at least 2, got {num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = SequenceModel(vocab_size, dim, depth, mixer, mixer_args, mlp_ratio, dropout)
        self.pooling = pooling
        self.paired = paired
        self.head = (
            nn.Sequential(nn.Linear(4 * dim, dim), nn.GELU(), nn.Linear(dim, num_classes))
            if paired
            else nn.Linear(dim, num_classes)
        )
        self.accuracy = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in ("train", "val", "test")}
        )

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """tokens [B, L] -> pooled features [B, D]."""
        return pool(self.model(tokens), mask, self.pooling)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, L] or [B, 2, L] (pairs) -> logits [B, num_classes]."""
        if not self.paired:
            require(tokens.dim() == 2, f"expected tokens [B, L], got shape {tuple(tokens.shape)}; set paired for pairs")
            return self.head(self.encode(tokens, mask))
        require(
            tokens.dim() == 3 and tokens.shape[1] == 2, f"paired inputs must be [B, 2, L], got {tuple(tokens.shape)}"
        )
        both = self.encode(tokens.flatten(0, 1), None if mask is None else mask.flatten(0, 1))
        u, v = both.view(tokens.shape[0], 2, -1).unbind(1)
        return self.head(torch.cat((u, v, u * v, u - v), dim=-1))

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["tokens"], batch.get("mask"))
        loss = F.cross_entropy(logits, batch["label"])
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits, batch["label"])
        self.log(f"{stage}/acc", accuracy, prog_bar=stage != "train", sync_dist=stage != "train")
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Predicted class per sequence. [B] int64"""
        return self(batch["tokens"], batch.get("mask")).argmax(-1)

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["tokens"].shape[0])


class SequenceTokenTask(BaseTask):
    """Predicts a target at every position that has one (selective copying, induction heads); logs `{stage}/acc`
    (per target token) and `{stage}/seq_acc` (sequences with every target right).

    Args:
        vocab_size: input token ids; num_classes: output ids (both linked from the datamodule).
        dim, depth, mixer, mixer_args, mlp_ratio, dropout: the `SequenceModel`.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    throughput_unit = "tokens"

    def __init__(
        self,
        vocab_size: int = 16,
        num_classes: int = 16,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "attention",
        mixer_args: dict[str, Any] | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = SequenceModel(vocab_size, dim, depth, mixer, mixer_args, mlp_ratio, dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> logits [B, L, num_classes]."""
        return self.head(self.model(tokens))

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits, targets = self(batch["tokens"]), batch["targets"]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        scored = targets != IGNORE_INDEX
        right = (logits.argmax(-1) == targets) | ~scored
        self.log(f"{stage}/acc", right[scored].float().mean(), prog_bar=stage != "train", sync_dist=stage != "train")
        self.log(f"{stage}/seq_acc", right.all(1).float().mean(), sync_dist=stage != "train")
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Predicted output id per position. [B, L] int64"""
        return self(batch["tokens"]).argmax(-1)

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["tokens"].numel())
