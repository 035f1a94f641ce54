"""The method card of IBM's TSMixer / PatchTSMixer (CATALOG 90)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="tsmixer",
    number=90,
    title="TSMixer: Lightweight MLP-Mixer Model for Multivariate Time Series Forecasting",
    arxiv="2306.09364",
    kind="train",
    domain="timeseries",
    entry_points=(
        "paperzoo.timeseries.tsmixer.model:TSMixer",
        "paperzoo.timeseries.tsmixer.model:TSMixerPretrainer",
        "paperzoo.timeseries.tsmixer.model:load_backbone",
        "paperzoo.timeseries.tsmixer.model:hierarchy_loss",
        "paperzoo.timeseries.tsmixer.task:TSMixerPretrainTask",
        "paperzoo.timeseries.tsmixer.porting:to_patchtsmixer",
        "paperzoo.timeseries.tsmixer.porting:from_patchtsmixer",
        "paperzoo.timeseries.data:ForecastingDataModule",
    ),
    claim=(
        "An MLP-Mixer on patches with gated attention (TSMixer) forecasts at or below PatchTST's error with less "
        "training time and memory, and masked self-supervised pretraining then fine-tuning beats training from "
        "scratch."
    ),
    reference_code="https://github.com/huggingface/transformers (models/patchtsmixer), https://github.com/ibm/tsfm",
    config_package="paperzoo.timeseries.tsmixer.configs",
    check="paperzoo.timeseries.tsmixer.check:check",
    task="paperzoo.timeseries.tsmixer.task:TSMixerTask",
)
