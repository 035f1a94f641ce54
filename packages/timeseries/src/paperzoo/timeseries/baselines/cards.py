"""Method cards of the forecasting baselines. They are not CATALOG papers, so their `number` is 0 ("not in the
catalog"); the papers they come from are named by title and arXiv id."""

from paperzoo.core.card import MethodCard

DATA = "paperzoo.timeseries.data:ForecastingDataModule"

NAIVE = MethodCard(
    key="naive",
    number=0,
    title="Naive and seasonal-naive forecasts (Hyndman & Athanasopoulos, Forecasting: Principles and Practice)",
    arxiv="",
    kind="eval",
    domain="timeseries",
    entry_points=(
        "paperzoo.timeseries.baselines.naive:NaiveForecaster",
        "paperzoo.timeseries.baselines.naive:SeasonalNaiveForecaster",
        "paperzoo.timeseries.baselines.naive:NaiveTask",
        "paperzoo.timeseries.baselines.naive:SeasonalNaiveTask",
        "paperzoo.timeseries.baselines.naive:evaluate_naive",
        DATA,
    ),
    claim="On a series with a strong daily cycle (electricity demand), repeating the last day (seasonal-naive) "
    "forecasts better than repeating the last value (naive).",
    reference_code="https://otexts.com/fpp3/simple-methods.html",
    config_package="paperzoo.timeseries.baselines.configs.naive",
    check="paperzoo.timeseries.baselines.checks:check_naive",
    run="paperzoo.timeseries.baselines.naive:evaluate_naive",
)

DLINEAR = MethodCard(
    key="dlinear",
    number=0,
    title="Are Transformers Effective for Time Series Forecasting?",
    arxiv="2205.13504",
    kind="train",
    domain="timeseries",
    entry_points=(
        "paperzoo.timeseries.baselines.dlinear:DLinear",
        "paperzoo.timeseries.baselines.dlinear:MovingAverage",
        "paperzoo.timeseries.baselines.dlinear:series_decomposition",
        DATA,
    ),
    claim="A one-layer linear model on a trend/remainder decomposition (DLinear) forecasts as well as or better "
    "than transformer forecasters.",
    reference_code="https://github.com/cure-lab/LTSF-Linear",
    config_package="paperzoo.timeseries.baselines.configs.dlinear",
    check="paperzoo.timeseries.baselines.checks:check_dlinear",
    task="paperzoo.timeseries.baselines.dlinear:DLinearTask",
)

PATCHTST = MethodCard(
    key="patchtst",
    number=0,
    title="A Time Series is Worth 64 Words: Long-term Forecasting with Transformers",
    arxiv="2211.14730",
    kind="train",
    domain="timeseries",
    entry_points=(
        "paperzoo.timeseries.baselines.patchtst:PatchTST",
        "paperzoo.timeseries.layers:RevIN",
        "paperzoo.timeseries.layers:patchify",
        DATA,
    ),
    claim="Patching and channel independence make a transformer forecast better than the same transformer on "
    "point-wise tokens or with channels mixed in each token.",
    reference_code="https://github.com/yuqinie98/PatchTST",
    config_package="paperzoo.timeseries.baselines.configs.patchtst",
    check="paperzoo.timeseries.baselines.checks:check_patchtst",
    task="paperzoo.timeseries.baselines.patchtst:PatchTSTTask",
)
