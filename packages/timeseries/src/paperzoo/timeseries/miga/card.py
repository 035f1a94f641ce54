"""The method card of MIGA (CATALOG 17)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="miga",
    number=17,
    title="MIGA: Mixture-of-Experts with Group Aggregation for Stock Market Prediction",
    arxiv="2410.02241",
    kind="train",
    domain="timeseries",
    entry_points=(
        "paperzoo.timeseries.miga.model:MIGA",
        "paperzoo.timeseries.miga.model:PlainMoE",
        "paperzoo.timeseries.miga.model:SingleModel",
        "paperzoo.timeseries.miga.data:StockPanelDataModule",
        "paperzoo.timeseries.miga.metrics:evaluate",
        "paperzoo.timeseries.miga.features:build_panel",
    ),
    claim=(
        "A mixture of style experts with group aggregation and inner-group attention ranks stocks better (higher "
        "rank IC on a held-out period) than a single model and a plain mixture of experts."
    ),
    reference_code="none published (ICLR 2025 submission withdrawn); baseline framework: microsoft/qlib",
    config_package="paperzoo.timeseries.miga.configs",
    check="paperzoo.timeseries.miga.check:check",
    task="paperzoo.timeseries.miga.task:MIGATask",
)
