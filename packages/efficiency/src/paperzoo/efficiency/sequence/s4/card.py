"""The method card of S4 (CATALOG 44)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="s4",
    number=44,
    title="Efficiently Modeling Long Sequences with Structured State Spaces",
    arxiv="2111.00396",
    kind="train",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.s4.model:S4Mixer",
        "paperzoo.efficiency.sequence.s4.model:dplr_kernel",
        "paperzoo.efficiency.sequence.ssm:hippo_legs",
        "paperzoo.efficiency.sequence.ssm:nplr_legs",
        "paperzoo.efficiency.sequence.ssm:cauchy",
        "paperzoo.efficiency.sequence.ssm:cauchy_naive",
        "paperzoo.efficiency.sequence.ssm:fft_conv",
        "paperzoo.efficiency.sequence.ssm:SSMConvolutionMixer",
        "paperzoo.efficiency.sequence.ssm:SSMAdamW",
        "paperzoo.efficiency.sequence.backbone:SequenceModel",
        "paperzoo.efficiency.sequence.lra.listops:ListOpsDataModule",
        "paperzoo.efficiency.sequence.lra.pathfinder:PathfinderDataModule",
    ),
    claim=(
        "S4, an SSM with the HiPPO-LegS state matrix in diagonal-plus-low-rank form whose convolution kernel is "
        "computed through a Cauchy kernel, beats transformers on long-range tasks (LRA ListOps and Pathfinder)."
    ),
    reference_code="https://github.com/state-spaces/s4 (models/s4/s4.py)",
    config_package="paperzoo.efficiency.sequence.s4.configs",
    check="paperzoo.efficiency.sequence.s4.check:check",
    task="paperzoo.efficiency.sequence.task:SequenceClassificationTask",
)
