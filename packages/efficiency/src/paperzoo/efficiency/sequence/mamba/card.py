"""The method card of Mamba (CATALOG 96)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="mamba",
    number=96,
    title="Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
    arxiv="2312.00752",
    kind="train",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.mamba.block:MambaMixer",
        "paperzoo.efficiency.sequence.mamba.scan:selective_scan",
        "paperzoo.efficiency.sequence.mamba.scan:selective_scan_ref",
        "paperzoo.efficiency.sequence.mamba.scan:linear_scan",
        "paperzoo.efficiency.sequence.backbone:SequenceModel",
        "paperzoo.efficiency.sequence.lra.diagnostics:SelectiveCopyingDataModule",
        "paperzoo.efficiency.sequence.lra.diagnostics:InductionHeadsDataModule",
    ),
    claim=(
        "Selective state spaces (input-dependent delta, B, C) solve selective copying and induction heads where "
        "LTI SSMs and same-size attention fall short, and generate at a constant cost per token."
    ),
    reference_code="https://github.com/state-spaces/mamba (mamba_ssm/modules/mamba_simple.py, selective_scan_ref)",
    config_package="paperzoo.efficiency.sequence.mamba.configs",
    check="paperzoo.efficiency.sequence.mamba.check:check",
    task="paperzoo.efficiency.sequence.task:SequenceTokenTask",
)
