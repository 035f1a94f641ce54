"""The method card of "Towards Neural Scaling Laws for Time Series Foundation Models" (CATALOG 79)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="tsfm_scaling",
    number=79,
    title="Towards Neural Scaling Laws for Time Series Foundation Models",
    arxiv="2410.12360",
    kind="train",
    domain="timeseries",
    entry_points=(
        "paperzoo.core.scaling:fit_power_law",
        "paperzoo.timeseries.scaling.model:PatchTSFM",
        "paperzoo.timeseries.scaling.model:tsfm",
        "paperzoo.timeseries.scaling.model:StudentTMixtureHead",
        "paperzoo.timeseries.scaling.data:scaling_split",
        "paperzoo.timeseries.data:ForecastingDataModule",
    ),
    claim=(
        "The log-likelihood loss of encoder-only and decoder-only time-series foundation models follows a power law "
        "in parameters and data size out of distribution as in distribution, with a similar exponent; encoder-only "
        "models scale better."
    ),
    reference_code="https://github.com/Qingrenn/TSFM-ScalingLaws",
    config_package="paperzoo.timeseries.scaling.configs",
    check="paperzoo.timeseries.scaling.check:check",
    task="paperzoo.timeseries.scaling.task:TSFMTask",
)
