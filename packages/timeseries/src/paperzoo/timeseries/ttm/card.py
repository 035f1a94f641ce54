"""The method card of Tiny Time Mixers (CATALOG 59)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="ttm",
    number=59,
    title=(
        "Tiny Time Mixers (TTMs): Fast Pre-trained Models for Enhanced Zero/Few-Shot Forecasting of Multivariate "
        "Time Series"
    ),
    arxiv="2401.03955",
    kind="train",
    domain="timeseries",
    entry_points=(
        "paperzoo.timeseries.ttm.model:TinyTimeMixer",
        "paperzoo.timeseries.ttm.model:ttm_tiny",
        "paperzoo.timeseries.data.corpus:CorpusDataModule",
        "paperzoo.timeseries.data.corpus:diverse_resolutions",
        "paperzoo.timeseries.data.corpus:downsample",
        "paperzoo.timeseries.ttm.port:to_granite",
        "paperzoo.timeseries.data:ForecastingDataModule",
    ),
    claim=(
        "A < 1M-parameter TTM pre-trained on a multi-resolution corpus forecasts unseen series zero-shot better than "
        "seasonal-naive, and its frozen-backbone few-shot fine-tune (5% of the windows) beats the same architecture "
        "trained from scratch on the same 5%."
    ),
    reference_code="https://github.com/ibm-granite/granite-tsfm (tsfm_public.models.tinytimemixer)",
    config_package="paperzoo.timeseries.ttm.configs",
    check="paperzoo.timeseries.ttm.check:check",
    task="paperzoo.timeseries.ttm.task:TTMTask",
)
