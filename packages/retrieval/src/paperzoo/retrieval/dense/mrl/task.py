"""`MRLTask`: fine-tune all-MiniLM-L6-v2 with the Matryoshka loss on query-passage pairs (arXiv 2205.13147).

Batches follow `paperzoo.retrieval.data.module.RetrievalDataModule`'s contract: `batch["query"]` and `batch["doc"]`
are `encoder.tokenize` outputs of aligned positive pairs; the other documents of the batch are the negatives.
`matryoshka=False` trains the same model with the same contrastive loss on the full embedding only: the baseline
whose truncated embeddings MRL is compared against.
"""

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.retrieval.dense.mrl.model import (
    DEFAULT_DIMS,
    SentenceEncoder,
    matryoshka_losses,
    validate_dims,
    validate_weights,
)

Batch = dict[str, Any]


class MRLTask(BaseTask):
    """Matryoshka Representation Learning on a MiniLM bi-encoder (queries and documents share the encoder).

    Args:
        dims: nested prefix lengths, strictly descending, each <= the embedding size (384, or projection_dim).
        weights: c_m per dimension (default 1 each, as in the paper).
        matryoshka: True trains sum_m c_m * loss(z[:m]); False trains loss(z) on the whole embedding only.
        trainable_layers: top transformer layers that train (see `MiniLMEncoder`).
        projection_dim: optional linear projection after mean pooling (see `SentenceEncoder`).
        scale: cosine scale of the in-batch contrastive loss (20, as sentence-transformers).
        pretrained, num_layers: False / a small num_layers build a random MiniLM-shaped encoder (unit tests).
        optimizer, lr_scheduler: see `BaseTask`.

    Logs `<stage>/loss` (the trained objective) and `<stage>/loss@m`, the contrastive loss of each prefix.
    """

    throughput_unit = "pairs"

    def __init__(
        self,
        dims: Sequence[int] = DEFAULT_DIMS,
        weights: Sequence[float] | None = None,
        matryoshka: bool = True,
        trainable_layers: int = 2,
        projection_dim: int | None = None,
        scale: float = 20.0,
        pretrained: bool = True,
        num_layers: int = 6,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.encoder = SentenceEncoder(trainable_layers, pretrained, num_layers, projection_dim)
        self.dims = validate_dims(dims, self.encoder.dim)
        self.weights = validate_weights(weights, self.dims)
        self.matryoshka = matryoshka
        self.scale = scale

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings [B, dim]; truncate to z[:m] and normalise to use a prefix."""
        return self.encoder(input_ids, attention_mask)

    def encode(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(tokens["input_ids"], tokens["attention_mask"])

    def objective(self, query_emb: torch.Tensor, doc_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(trained loss, [len(dims)] per-prefix losses). The baseline's loss is the full-embedding one."""
        per_dim = matryoshka_losses(query_emb, doc_emb, self.dims, scale=self.scale)  # [M]
        if self.matryoshka:
            return (per_dim * per_dim.new_tensor(self.weights)).sum(), per_dim
        if self.dims[0] == self.encoder.dim:
            return per_dim[0], per_dim
        full = matryoshka_losses(query_emb, doc_emb, [self.encoder.dim], scale=self.scale)[0]
        return full, per_dim

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        loss, per_dim = self.objective(self.encode(batch["query"]), self.encode(batch["doc"]))
        self.log_dict(
            {f"{stage}/loss@{m}": value for m, value in zip(self.dims, per_dim.detach(), strict=True)},
            sync_dist=stage != "train",
        )
        return loss

    def count_items(self, batch: Batch) -> int:
        return int(batch["query"]["input_ids"].shape[0])

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return {"query": self.encode(batch["query"]), "doc": self.encode(batch["doc"])}
