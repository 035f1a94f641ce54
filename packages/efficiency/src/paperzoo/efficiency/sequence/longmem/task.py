"""`LongMemTask`: LongMem's memory-augmented adaptation, training the SideNet with the LM loss over long documents.

"Augmenting Language Models with Long-Term Memory" (arXiv:2306.07174), section 2.4: the backbone stays frozen;
the SideNet (and its memory gate) learn with the plain next-token loss while each document is processed segment by
segment, every segment reading the cached keys and values of the segments before it. Documents in a batch have
separate memories, and a memory lives for one document (it is rebuilt for every batch), so a step is a function of
its batch alone and checkpoints, validation and resumption behave as for any LM.

Logged: `{stage}/loss` (nats per byte, all positions), `{stage}/acc` (recall: the share of queried value bytes
predicted exactly, teacher-forced), `{stage}/exact` (queries whose whole value is predicted) and
`{stage}/value_loss` (the loss on the value bytes alone).
"""

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.errors import require
from paperzoo.core.lm.data import ByteTokenizer
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.efficiency.sequence.longmem.memory import SearchBackend
from paperzoo.efficiency.sequence.longmem.model import BackboneRecipe, Fusion, LongMem, pretrained_backbone


def recall_figures(logits: torch.Tensor, batch: dict[str, torch.Tensor], value_digits: int) -> dict[str, torch.Tensor]:
    """Recall of the queried values: {"acc", "exact", "value_loss", "values"} (means over value bytes / queries).

    Args:
        logits: [B, N, V] for the inputs `batch["tokens"][:, :-1]`.
        batch: {"tokens": [B, N + 1], "value_mask": [B, N]}.
        value_digits: bytes per value (the masked positions of a document come in whole values).
    """
    targets = batch["tokens"][:, 1:][batch["value_mask"]]  # [M]
    picked = logits[batch["value_mask"]]  # [M, V]
    correct = picked.argmax(dim=-1) == targets
    return {
        "acc": correct.float().mean(),
        "exact": correct.view(-1, value_digits).all(dim=-1).float().mean(),
        "value_loss": F.cross_entropy(picked.float(), targets),
        "values": torch.tensor(targets.numel()),
    }


class LongMemTask(BaseTask):
    """Trains LongMem's SideNet on long documents (batches of `LongMemDataModule`).

    Args:
        vocab_size: must be the byte vocabulary (257; linked from the datamodule).
        backbone_dim, backbone_layers, backbone_heads, pretrain_steps, pretrain_batch_size, pretrain_lr: the recipe
            of the frozen byte-level backbone (`BackboneRecipe`), pretrained once and cached.
        segment_len: the local window: tokens per segment (also the backbone's context length).
        reduction_factor, memory_layer, memory_size, chunk_size, retrieve_tokens, fusion, search, use_memory,
            memory_source_layer: see `LongMem` (`use_memory=False` is the same SideNet without memory, the
            local-window baseline).
        value_digits: bytes per queried value (for the exact-match figure).
        optimizer, lr_scheduler: see `BaseTask` (only the SideNet has trainable parameters).

    Shapes:
        batch: {"tokens": [B, N + 1] int64, "value_mask": [B, N] bool}, N a multiple of `segment_len`.
    """

    throughput_unit = "tokens"

    def __init__(
        self,
        vocab_size: int = ByteTokenizer.vocab_size,
        backbone_dim: int = 64,
        backbone_layers: int = 4,
        backbone_heads: int = 2,
        pretrain_steps: int = 600,
        pretrain_batch_size: int = 16,
        pretrain_lr: float = 3e-3,
        segment_len: int = 64,
        reduction_factor: int = 2,
        memory_layer: int = -1,
        memory_size: int = 512,
        chunk_size: int = 4,
        retrieve_tokens: int = 32,
        fusion: Fusion = "gate",
        search: SearchBackend = "torch",
        use_memory: bool = True,
        memory_source_layer: int | None = None,
        value_digits: int = 4,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        require(
            vocab_size == ByteTokenizer.vocab_size,
            f"LongMem's backbone is byte-level: vocab_size must be {ByteTokenizer.vocab_size}, got {vocab_size}",
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.recipe = BackboneRecipe(
            dim=backbone_dim,
            n_layers=backbone_layers,
            n_heads=backbone_heads,
            seq_len=segment_len,
            steps=pretrain_steps,
            batch_size=pretrain_batch_size,
            lr=pretrain_lr,
        )
        backbone, self.backbone_figures = pretrained_backbone(self.recipe)
        self.segment_len, self.value_digits = segment_len, value_digits
        self.model = LongMem(
            backbone,
            reduction_factor=reduction_factor,
            memory_layer=memory_layer,
            memory_size=memory_size,
            chunk_size=chunk_size,
            retrieve_tokens=retrieve_tokens,
            fusion=fusion,
            search=search,
            use_memory=use_memory,
            memory_source_layer=memory_source_layer,
        )

    def forward(self, tokens: torch.Tensor, memory_size: int | None = None) -> torch.Tensor:
        """Documents [B, N] -> logits [B, N, V] (`memory_size` overrides the bank's capacity)."""
        return self.model.forward_document(tokens, self.segment_len, memory_size)

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        tokens = batch["tokens"]
        logits = self(tokens[:, :-1])  # [B, N, V]
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        figures = recall_figures(logits.detach(), batch, self.value_digits)
        count = int(figures.pop("values"))
        for name, value in figures.items():
            self.log(f"{stage}/{name}", value, batch_size=count, sync_dist=stage != "train")
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Greedy next-byte predictions for every position of the documents. [B, N] int64"""
        return self(batch["tokens"][:, :-1]).argmax(dim=-1)

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["tokens"][:, 1:].numel()
