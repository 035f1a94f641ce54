"""`CausalLMTask`: next-token prediction with the core `GPT` (the LM that WSD and many efficiency papers train)."""

import math

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.lm.gpt import GPT
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask


class CausalLMTask(BaseTask):
    """Trains `GPT` with the mean next-token cross-entropy; logs `val/loss` (nats/token) and `val/bits_per_token`.

    Args:
        vocab_size: V (linked from the datamodule's tokenizer by the `paperzoo` command).
        dim, n_layers, n_heads, max_seq_len, dropout: the `GPT` architecture.
        optimizer, lr_scheduler: see `BaseTask`.

    Shapes:
        batch: [B, T + 1] token windows; input = batch[:, :-1], target = batch[:, 1:].
    """

    throughput_unit = "tokens"

    def __init__(
        self,
        vocab_size: int = 257,
        dim: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        max_seq_len: int = 256,
        dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = GPT(vocab_size, dim, n_layers, n_heads, max_seq_len, dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V]."""
        return self.model(tokens)

    def step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        logits = self.model(batch[:, :-1])  # [B, T, V]
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        if stage != "train":
            self.log(f"{stage}/bits_per_token", loss / math.log(2), sync_dist=True)
        return loss

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Greedy next-token predictions for each position of the input windows. [B, T] int64"""
        return self.model(batch[:, :-1]).argmax(dim=-1)

    def count_items(self, batch: torch.Tensor) -> int:
        return batch[:, 1:].numel()
