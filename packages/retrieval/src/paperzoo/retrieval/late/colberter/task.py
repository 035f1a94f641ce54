"""`ColBERTerTask`: trains ColBERTer (CATALOG 33, https://arxiv.org/abs/2203.13088) on query-passage pairs.

Loss (the paper's multi-task form, with in-batch negatives instead of its distillation):
    L = CE(s_fused) + cls_loss_weight * CE(s_cls) + token_loss_weight * CE(s_tok) + sparsity_weight * mean(g)
where CE is the in-batch contrastive cross-entropy (`paperzoo.retrieval.losses.in_batch_contrastive`, each query
against every document of the batch), and mean(g) the mean stopword gate over the real document words of the batch
(the sparsity loss of the contextualised stopwords, as in the reference training code).

Deviations: the paper trains with Margin-MSE distillation from a teacher ensemble and BM25 negatives in several
stages (CLS retrieval first, then the refinement, then the reductions); offline we have no teacher, so every
component trains jointly from the start with in-batch negatives. The weights of the auxiliary losses are our
choice (the reference code weighted its secondary CLS loss 0.1 and the sparsity loss 0.75).
"""

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.retrieval.late.colberter.model import ColBERTer, Representation
from paperzoo.retrieval.losses import in_batch_contrastive

Batch = dict[str, Any]


def reciprocal_rank_of_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """Mean reciprocal rank of each query's own document (the diagonal) among the batch's. scores [B, B'] -> []."""
    own = scores.diagonal().unsqueeze(1)  # [B, 1]
    rank = 1 + (scores > own).sum(1)  # [B]
    return (1.0 / rank.float()).mean()


class ColBERTerTask(BaseTask):
    """ColBERTer, Uni-ColBERTer or plain ColBERT, trained with in-batch negatives.

    Args:
        cls_dim, token_dim, stored_dim, bow2, stopwords, exact_match, cls_pooling, normalize, single_scale,
            trainable_layers, pretrained, num_layers: the model's (`ColBERTer`); plain ColBERT is
            `cls_dim=0, bow2=False, stopwords=False`.
        cls_loss_weight: weight of the contrastive loss on the single-vector score alone.
        token_loss_weight: weight of the contrastive loss on the token (MaxSim) score alone.
        sparsity_weight: weight of the stopword sparsity loss (mean gate value).
        optimizer, lr_scheduler: see `BaseTask`.
    """

    throughput_unit = "pairs"

    def __init__(
        self,
        cls_dim: int = 128,
        token_dim: int = 32,
        stored_dim: int | None = None,
        bow2: bool = True,
        stopwords: bool = True,
        exact_match: bool = False,
        cls_pooling: str = "mean",
        normalize: bool = True,
        single_scale: float = 20.0,
        trainable_layers: int = 2,
        pretrained: bool = True,
        num_layers: int = 6,
        cls_loss_weight: float = 0.1,
        token_loss_weight: float = 0.1,
        sparsity_weight: float = 0.75,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        for name, weight in (
            ("cls_loss_weight", cls_loss_weight),
            ("token_loss_weight", token_loss_weight),
            ("sparsity_weight", sparsity_weight),
        ):
            require(weight >= 0, f"{name} must be >= 0, got {weight}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = ColBERTer(
            cls_dim=cls_dim,
            token_dim=token_dim,
            stored_dim=stored_dim,
            bow2=bow2,
            stopwords=stopwords,
            exact_match=exact_match,
            cls_pooling=cls_pooling,
            normalize=normalize,
            single_scale=single_scale,
            trainable_layers=trainable_layers,
            pretrained=pretrained,
            num_layers=num_layers,
        )
        self.cls_loss_weight, self.token_loss_weight = cls_loss_weight, token_loss_weight
        self.sparsity_weight = sparsity_weight

    def encode(self, texts: dict[str, torch.Tensor], is_document: bool, **options: Any) -> Representation:
        """A tokenized batch (`encoder.tokenize`'s dict, optionally with prefix states under "hidden")."""
        missing = {"input_ids", "attention_mask", "word_ids"} - set(texts)
        if missing:
            raise ConfigError(
                f"a ColBERTer batch needs input_ids, attention_mask and word_ids; missing {sorted(missing)}"
            )
        return self.model.encode(
            texts["input_ids"],
            texts["attention_mask"],
            texts["word_ids"],
            is_document=is_document,
            hidden=texts.get("hidden"),
            **options,
        )

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every term of the loss and the scores, for a batch {"query", "doc"} of aligned pairs."""
        queries = self.encode(batch["query"], is_document=False)
        docs = self.encode(batch["doc"], is_document=True)
        scores = self.model.score(queries, docs)  # each [B, B]
        out = {"fused": in_batch_contrastive(scores["fused"]), "scores": scores["fused"]}
        loss = out["fused"]
        if "single" in scores and self.cls_loss_weight > 0:
            out["single"] = in_batch_contrastive(scores["single"])
            loss = loss + self.cls_loss_weight * out["single"]
        if "single" in scores and self.token_loss_weight > 0:  # without a single vector, fused is the token score
            out["tokens"] = in_batch_contrastive(scores["tokens"])
            loss = loss + self.token_loss_weight * out["tokens"]
        if docs.gate is not None:
            gates = docs.gate[docs.mask]  # the real document words
            out["sparsity"] = gates.mean()
            out["kept_words"] = (gates > 0).float().mean()
            loss = loss + self.sparsity_weight * out["sparsity"]
        out["loss"] = loss
        return out

    def step(self, batch: Batch, stage: str) -> torch.Tensor:
        out = self.losses(batch)
        size = int(batch["query"]["input_ids"].shape[0])
        logged = {
            f"{stage}/{name}_loss": out[name] for name in ("fused", "single", "tokens", "sparsity") if name in out
        }
        if "kept_words" in out:
            logged[f"{stage}/kept_words"] = out["kept_words"]
        if stage != "train":
            logged[f"{stage}/in_batch_mrr"] = reciprocal_rank_of_diagonal(out["scores"])
        self.log_dict(logged, batch_size=size, sync_dist=stage != "train")
        return out["loss"]

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The fused score of each query with its own document, and the number of document vectors kept at index
        time (after BOW^2 and stopword removal) next to the number of subword tokens."""
        queries = self.encode(batch["query"], is_document=False)
        docs = self.encode(batch["doc"], is_document=True, remove_stopwords=True)
        scores = self.model.score(queries, docs)["fused"]
        return {
            "score": scores.diagonal(),
            "stored_vectors": docs.mask.sum(1),
            "subword_tokens": batch["doc"]["attention_mask"].sum(1),
        }

    def count_items(self, batch: Batch) -> int:
        return int(batch["query"]["input_ids"].shape[0])
