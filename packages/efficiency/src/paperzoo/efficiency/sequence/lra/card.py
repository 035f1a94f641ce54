"""The method card of Long Range Arena (CATALOG 72): the benchmark harness and its results table."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="lra",
    number=72,
    title="Long Range Arena: A Benchmark for Efficient Transformers",
    arxiv="2011.04006",
    kind="eval",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.lra.listops:ListOpsDataModule",
        "paperzoo.efficiency.sequence.lra.text:ByteTextDataModule",
        "paperzoo.efficiency.sequence.lra.matching:ByteMatchingDataModule",
        "paperzoo.efficiency.sequence.lra.image:SequentialImageDataModule",
        "paperzoo.efficiency.sequence.lra.pathfinder:PathfinderDataModule",
        "paperzoo.efficiency.sequence.lra.pathfinder:PathXDataModule",
        "paperzoo.efficiency.sequence.lra.pathfinder:generate_pathfinder",
        "paperzoo.efficiency.sequence.lra.table:lra_table",
        "paperzoo.efficiency.sequence.lra.table:run_lra_table",
    ),
    claim=(
        "On long-range tasks (ListOps, Pathfinder) transformers, vanilla or linear, fall below state-space and "
        "long-convolution models (S4D, SGConv, Mamba) of the same size and budget."
    ),
    reference_code="https://github.com/google-research/long-range-arena",
    config_package="paperzoo.efficiency.sequence.lra.configs",
    check="paperzoo.efficiency.sequence.lra.check:check",
    run="paperzoo.efficiency.sequence.lra.table:run_lra_table",
)
