"""The method card of Never Train from Scratch (CATALOG 53): self-pretraining, then fine-tuning."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="spt",
    number=53,
    title="Never Train from Scratch: Fair Comparison of Long-Sequence Models Requires Data-Driven Priors",
    arxiv="2310.02980",
    kind="train",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.spt.task:SelfPretrainTask",
        "paperzoo.efficiency.sequence.spt.task:FinetuneClassificationTask",
        "paperzoo.efficiency.sequence.spt.task:load_pretrained_backbone",
        "paperzoo.efficiency.sequence.spt.objectives:mask_tokens",
        "paperzoo.efficiency.sequence.spt.objectives:causal_targets",
        "paperzoo.efficiency.sequence.lra.listops:ListOpsDataModule",
    ),
    claim=(
        "Self-pretraining on the downstream task's own inputs (masked denoising for bidirectional models) gives large "
        "gains over training from scratch, closes most of the transformer-to-S4 gap, and leaves little difference "
        "between HiPPO and random initialisation of the SSM."
    ),
    reference_code="https://github.com/IdoAmos/not-from-scratch",
    config_package="paperzoo.efficiency.sequence.spt.configs",
    check="paperzoo.efficiency.sequence.spt.check:check",
    task="paperzoo.efficiency.sequence.spt.task:SelfPretrainTask",
)
