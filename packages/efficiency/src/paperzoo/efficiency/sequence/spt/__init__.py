"""Never Train from Scratch (CATALOG 53, arXiv:2310.02980): self-pretraining on the downstream task's own inputs
(masked denoising for bidirectional models, next-token prediction for causal ones), then fine-tuning."""

from paperzoo.efficiency.sequence.spt.objectives import causal_targets, denoising_loss, mask_tokens
from paperzoo.efficiency.sequence.spt.task import (
    FinetuneClassificationTask,
    SelfPretrainTask,
    load_pretrained_backbone,
)

__all__ = [
    "FinetuneClassificationTask",
    "SelfPretrainTask",
    "causal_targets",
    "denoising_loss",
    "load_pretrained_backbone",
    "mask_tokens",
]
