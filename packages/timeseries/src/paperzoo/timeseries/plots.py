"""Forecast plots: the history, the truth and the forecast of one window, for a few channels.

Used by the claim checks, and by `paperzoo predict` through the `ForecastPlotWriter` callback:

    paperzoo predict --config X.yaml --ckpt_path last.ckpt \
        --trainer.callbacks+=paperzoo.timeseries.plots.ForecastPlotWriter --trainer.callbacks.dirpath=plots

Matplotlib runs on the non-interactive Agg backend, and the figure is written atomically (rendered to a temporary
sibling, then renamed), so a killed run never leaves a truncated image.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from paperzoo.core.errors import DataError
from paperzoo.core.io import atomic_open

ArrayLike = np.ndarray | torch.Tensor


def _as_window(x: ArrayLike, name: str) -> np.ndarray:
    array = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if array.ndim == 3:  # a batch: plot its first window
        array = array[0]
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{name} must be [T, C] (or [B, T, C], [T]), got shape {array.shape}")
    return array


def plot_forecasts(
    past: ArrayLike,
    future: ArrayLike,
    forecast: ArrayLike,
    channel_names: Sequence[str] | None,
    path: str | Path,
    channels: Sequence[int] = (0, 1, 2),
    title: str | None = None,
) -> Path:
    """Plot one window: history (past), truth (future) and forecast, one panel per channel.

    Args:
        past: the lookback. [L, C] (a batch [B, L, C] plots its first window)
        future: the true continuation. [H, C]
        forecast: the forecast. [H, C]
        channel_names: names for the panel titles; None numbers the channels.
        path: the image file to write (format from the suffix, e.g. .png).
        channels: channel indices to plot (those beyond C are ignored).
        title: figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    past, future, forecast = _as_window(past, "past"), _as_window(future, "future"), _as_window(forecast, "forecast")
    if future.shape != forecast.shape or past.shape[1] != future.shape[1]:
        raise DataError(
            f"past {past.shape}, future {future.shape} and forecast {forecast.shape} must share C, and future and "
            "forecast their shape"
        )
    num_channels = past.shape[1]
    chosen = [c for c in channels if 0 <= c < num_channels] or [0]
    names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(num_channels)]
    context, horizon = past.shape[0], future.shape[0]
    t_past, t_future = np.arange(-context, 0), np.arange(horizon)

    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 2.2 * len(chosen)), sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], chosen, strict=True):
        ax.plot(t_past, past[:, c], color="0.35", lw=1.0, label="history")
        # join the truth to the last observed point so the curves read as one line
        ax.plot(np.r_[-1, t_future], np.r_[past[-1, c], future[:, c]], color="tab:blue", lw=1.2, label="truth")
        ax.plot(np.r_[-1, t_future], np.r_[past[-1, c], forecast[:, c]], color="tab:orange", lw=1.2, label="forecast")
        ax.axvline(-0.5, color="0.7", lw=0.8, ls="--")
        ax.set_title(names[c] if c < len(names) else f"channel {c}", fontsize=9)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("step (0 = first forecast step)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format=path.suffix.lstrip(".") or "png", dpi=110)
    finally:
        plt.close(fig)
    return path


class ForecastPlotWriter(Callback):
    """Write `plot_forecasts` of the first window of the first `max_plots` predict batches.

    Works with any task whose `predict_step` returns `{"past", "future", "forecast"}` (`ForecastingTask` does).
    Values are mapped back to the data's units with the datamodule's `scaler` when it has one (`unscale`), and
    panels are titled with its `channel_names`.

    Args:
        dirpath: folder for `forecast_<batch>.png`.
        max_plots: how many batches to plot.
        channels: channel indices to plot.
        unscale: invert the datamodule's scaler before plotting.
    """

    def __init__(
        self,
        dirpath: str = "forecast_plots",
        max_plots: int = 4,
        channels: Sequence[int] = (0, 1, 2),
        unscale: bool = True,
    ):
        self.dirpath, self.max_plots, self.channels, self.unscale = Path(dirpath), max_plots, tuple(channels), unscale
        self.written: list[Path] = []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx >= self.max_plots or not trainer.is_global_zero or not isinstance(outputs, dict):
            return
        datamodule = getattr(trainer, "datamodule", None)
        scaler = getattr(datamodule, "scaler", None) if self.unscale else None
        window = {k: outputs[k][0].detach().cpu().float() for k in ("past", "future", "forecast")}  # [T, C] each
        if scaler is not None and window["past"].shape[-1] == scaler.num_channels:
            window = {k: scaler.inverse_transform(v) for k, v in window.items()}
        names = getattr(datamodule, "channel_names", None)
        path = self.dirpath / f"forecast_{batch_idx:03d}.png"
        plot_forecasts(window["past"], window["future"], window["forecast"], names, path, self.channels)
        self.written.append(path)
