"""The method card of SGConv (CATALOG 71)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="sgconv",
    number=71,
    title="What Makes Convolutional Models Great on Long Sequence Modeling?",
    arxiv="2210.09298",
    kind="train",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.sgconv.model:SGConvMixer",
        "paperzoo.efficiency.sequence.sgconv.model:multiscale_kernel",
        "paperzoo.efficiency.sequence.sgconv.model:fft_conv",
        "paperzoo.efficiency.sequence.backbone:SequenceModel",
        "paperzoo.efficiency.sequence.lra.listops:ListOpsDataModule",
        "paperzoo.efficiency.sequence.lra.pathfinder:PathfinderDataModule",
    ),
    claim=(
        "A global convolution whose kernel is built from multi-scale sub-kernels (sub-linear parameters) with "
        "decaying weights (SGConv) beats a same-size transformer on long-range tasks, needs both principles, is "
        "close to S4 in accuracy and faster per step."
    ),
    reference_code="https://github.com/ctlllll/SGConv (gconv_standalone.py)",
    config_package="paperzoo.efficiency.sequence.sgconv.configs",
    check="paperzoo.efficiency.sequence.sgconv.check:check",
    task="paperzoo.efficiency.sequence.task:SequenceClassificationTask",
)
