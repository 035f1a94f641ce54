"""`StationaryTask`: trains a compatible representation of passages with a d-Simplex fixed classifier (CATALOG 42).

Biondi et al., "Stationary Representations: Optimally Approximating Compatibility and Implications for Improved
Model Replacements", CVPR 2024, https://arxiv.org/abs/2405.02581.

Training classifies each passage (`batch["doc"]`) into its source article (`batch["label"]`, -1 = no label, ignored)
with cross-entropy through the classifier of `StationaryModel`: the fixed d-Simplex (the paper's method) or a
learnable linear layer (the baseline). `bct_weight > 0` adds BCT's influence loss against the classifier of an old
model (`old_checkpoint`, a `StationaryTask` checkpoint): the BCT baseline when the classifier is learnable.
`init_from_old` starts from the old model's weights (sequential fine-tuning); without it the new model starts from
the pretrained encoder and a fresh projection (a model replacement).

Validation and test measure the representation for retrieval, on any split (the dev/test articles are classes the
classifier never saw): `loss` is the in-batch contrastive loss of the batch's queries against its passages
(cosine, scale 20) and `top1` the fraction of queries whose own passage ranks first in the batch.

The multi-step model-replacement protocol and the compatibility metrics live in `check.py` and `compatibility.py`.
"""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.errors import ConfigError
from paperzoo.core.io import load_checkpoint_file
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.retrieval.dense.stationary.model import ClassifierKind, StationaryModel, bct_influence_loss
from paperzoo.retrieval.losses import cosine_scores, in_batch_contrastive


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled samples (label >= 0); 0 (with a graph) when none is labelled.
    logits [B, K], labels [B]."""
    if logits.shape[1] <= int(labels.max()):
        raise ConfigError(f"label {int(labels.max())} is outside the classifier's {logits.shape[1]} classes")
    keep = labels >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


class StationaryTask(BaseTask):
    """Passage classification into source articles with a fixed d-Simplex (or learnable) classifier.

    Args:
        num_groups: K, the classes (linked from the datamodule's `num_groups`).
        feature_dim: d, the representation's dimension (default K - 1).
        classifier: "simplex" (fixed d-Simplex, the paper) or "learnable" (baseline).
        bct_weight: weight of BCT's influence loss against the old model's classifier (needs `old_checkpoint`).
        old_checkpoint: a `StationaryTask` checkpoint of the old model (same K and d), read at the start of a fresh
            fit; its classifier is stored in this task's state, so the file is not needed to reload this task.
        init_from_old: initialise this model from the old model (sequential fine-tuning) instead of the pretrained
            encoder and a fresh projection (model replacement).
        trainable_layers, pretrained, num_layers: the MiniLM encoder, see `MiniLMEncoder`.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    old_classifier: torch.Tensor

    def __init__(
        self,
        num_groups: int = 2,
        feature_dim: int | None = None,
        classifier: ClassifierKind = "simplex",
        bct_weight: float = 0.0,
        old_checkpoint: str | None = None,
        init_from_old: bool = False,
        trainable_layers: int = 2,
        pretrained: bool = True,
        num_layers: int = 6,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if bct_weight < 0:
            raise ConfigError(f"bct_weight must be >= 0, got {bct_weight}")
        if (bct_weight > 0 or init_from_old) and old_checkpoint is None:
            raise ConfigError("bct_weight > 0 and init_from_old need old_checkpoint, the old model's checkpoint")
        self.model = StationaryModel(
            num_groups,
            feature_dim,
            classifier=classifier,
            trainable_layers=trainable_layers,
            pretrained=pretrained,
            num_layers=num_layers,
        )
        self.bct_weight, self.old_checkpoint, self.init_from_old = bct_weight, old_checkpoint, init_from_old
        # the old classifier is part of the state, so a reloaded task needs no old checkpoint file
        self.register_buffer("old_classifier", torch.zeros(num_groups, self.model.feature_dim))

    def load_old_model(self, path: str) -> None:
        """Read the old model's classifier (and, with `init_from_old`, all its weights) from a checkpoint."""
        checkpoint = load_checkpoint_file(path)
        saved = checkpoint.get("state_dict", {})
        state = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
        weight = state.get("classifier.weight")
        if weight is None or weight.shape != self.old_classifier.shape:
            shape = None if weight is None else tuple(weight.shape)
            raise ConfigError(
                f"old_checkpoint {path} has classifier weights of shape {shape}; expected a StationaryTask checkpoint "
                f"with {tuple(self.old_classifier.shape)} (same num_groups and feature_dim)"
            )
        self.old_classifier.copy_(weight)
        if self.init_from_old:
            own = self.model.state_dict()
            inherited = {k: v for k, v in state.items() if k in own and not k.startswith("classifier.")}
            self.model.load_state_dict(inherited, strict=False)
            if self.model.classifier_kind == "learnable":
                self.model.classifier.weight.data.copy_(weight)

    def setup(self, stage: str) -> None:
        resuming = getattr(self._trainer, "ckpt_path", None) is not None
        if stage == "fit" and self.old_checkpoint and not resuming:
            self.load_old_model(self.old_checkpoint)

    def step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        doc = batch["doc"]
        out = self.model(doc["input_ids"], doc["attention_mask"])
        if stage == "train":
            labels = batch["label"]
            loss = classification_loss(out["logits"], labels)
            if self.bct_weight > 0:
                loss = loss + self.bct_weight * bct_influence_loss(out["features"], self.old_classifier, labels)
            keep = labels >= 0
            if bool(keep.any()):
                accuracy = (out["logits"][keep].argmax(1) == labels[keep]).float().mean()
                self.log("train/accuracy", accuracy, batch_size=int(labels.shape[0]))
            return loss
        query = batch["query"]
        query_features = self.model(query["input_ids"], query["attention_mask"])["features"]
        scores = cosine_scores(query_features, out["features"])  # [B, B]
        top1 = (scores.argmax(1) == torch.arange(scores.shape[0], device=scores.device)).float().mean()
        self.log(f"{stage}/top1", top1, sync_dist=True, batch_size=int(scores.shape[0]))
        return in_batch_contrastive(scores)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """The L2-normalised representations [B, d] of the batch's passages (what a gallery stores) and queries."""
        doc, query = batch["doc"], batch["query"]
        return {
            "doc_embedding": self.model.embed(doc["input_ids"], doc["attention_mask"]),
            "query_embedding": self.model.embed(query["input_ids"], query["attention_mask"]),
        }

    def count_items(self, batch: dict[str, Any]) -> int:
        return int(batch["label"].shape[0])
