"""The ID/OOD split of the TSFM scaling study (CATALOG 79): windows of pretraining series and of unseen series.

Two sources:

- "corpus": the package's offline series corpus (`paperzoo.timeseries.data.corpus.split_corpus`): pretraining series
  give the training windows (their first 80%) and the in-distribution (ID) validation windows (their last 20%); the
  fixed held-out series give the out-of-distribution (OOD) windows.
- "synthetic": the catalog's small-scale design: ID series are generated mixtures (AR(2), seasonal, trend and
  regime-switching components, `generated_series`); OOD windows come from real offline series that no generator
  imitates (statsmodels co2, sunspots, macrodata, Nile, El Nino; sktime airline and lynx, `real_ood_series`).

Every window is T = L + H consecutive raw values; the models scale each window themselves (Moirai's std scaler on the
context), so no dataset-level scaling is needed and none can leak.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from paperzoo.core.errors import DataError

Source = Literal["corpus", "synthetic"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ScalingSplit:
    """Windows for the scaling study, each [num_windows, T] float32."""

    train: torch.Tensor
    id_val: torch.Tensor
    ood: torch.Tensor
    source: str
    n_pretrain_series: int
    n_ood_series: int


def generated_series(n_series: int, length: int, seed: int = 0) -> list[FloatArray]:
    """Random mixtures of an AR(2) process, seasonalities, a trend and regime switches (levels and volatilities)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    out = []
    for _ in range(n_series):
        # a stationary AR(2): roots inside the unit circle
        r, theta = rng.uniform(0.3, 0.97), rng.uniform(0.0, np.pi)
        a1, a2 = 2 * r * np.cos(theta), -(r**2)
        noise = rng.normal(0.0, 1.0, length)
        regime_scale = np.ones(length)
        regime_level = np.zeros(length)
        if rng.random() < 0.4:  # regime switches at random times
            switches = np.sort(rng.choice(np.arange(16, length - 16), size=rng.integers(1, 4), replace=False))
            for start in switches:
                regime_scale[start:] = rng.uniform(0.3, 3.0)
                regime_level[start:] += rng.normal(0.0, 3.0)
        ar = np.zeros(length)
        for i in range(2, length):
            ar[i] = a1 * ar[i - 1] + a2 * ar[i - 2] + regime_scale[i] * noise[i]
        seasonal = np.zeros(length)
        for _ in range(rng.integers(0, 3)):
            period = rng.choice([4, 7, 12, 24, 52]) * rng.uniform(0.95, 1.05)
            seasonal += rng.uniform(0.5, 4.0) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        trend = rng.normal(0.0, 0.03) * t + (rng.normal(0.0, 1e-4) * t**2 if rng.random() < 0.3 else 0.0)
        level, scale = rng.normal(0.0, 10.0), np.exp(rng.normal(0.0, 1.0))
        out.append(level + scale * (ar * rng.uniform(0.2, 1.5) + seasonal + trend + regime_level))
    return out


def real_ood_series() -> list[tuple[str, FloatArray]]:
    """Real univariate series from statsmodels and sktime (bundled with the packages, offline)."""
    import statsmodels.api as sm
    from sktime.datasets import load_airline, load_lynx

    series: list[tuple[str, FloatArray]] = []
    co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate(limit_direction="both")
    series.append(("co2", co2.to_numpy(np.float64)))
    series.append(("sunspots", sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)))
    macro = sm.datasets.macrodata.load_pandas().data
    for column in ("realgdp", "realcons", "realinv", "realgovt", "cpi", "m1", "tbilrate", "unemp", "infl"):
        series.append((f"macrodata.{column}", macro[column].to_numpy(np.float64)))
    series.append(("nile", sm.datasets.nile.load_pandas().data["volume"].to_numpy(np.float64)))
    elnino = sm.datasets.elnino.load_pandas().data.drop(columns="YEAR")
    series.append(("elnino", elnino.to_numpy(np.float64).reshape(-1)))
    series.append(("airline", load_airline().to_numpy(np.float64)))
    series.append(("lynx", load_lynx().to_numpy(np.float64)))
    return series


def windows(values: FloatArray, length: int, stride: int, max_windows: int | None = None) -> FloatArray:
    """Consecutive windows of `length` every `stride` steps; at most `max_windows`, evenly spread. -> [W, length]"""
    if len(values) < length:
        return np.zeros((0, length))
    starts = np.arange(0, len(values) - length + 1, stride)
    if max_windows is not None and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return np.stack([values[s : s + length] for s in starts])


def _stack(chunks: list[FloatArray], length: int, what: str) -> torch.Tensor:
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        raise DataError(f"no {what} window of {length} steps: every series is shorter")
    stacked = np.concatenate(chunks)
    stacked = stacked[np.all(np.isfinite(stacked), axis=1)]
    return torch.from_numpy(stacked).float()


def scaling_split(
    source: Source = "synthetic",
    window: int = 64,
    stride: int = 8,
    val_fraction: float = 0.2,
    n_generated: int = 300,
    generated_length: int = 320,
    max_windows_per_series: int = 32,
    seed: int = 0,
) -> ScalingSplit:
    """Training, ID-validation and OOD windows of `window` steps.

    Each pretraining series is split in time: training windows from its first `1 - val_fraction`, ID windows from the
    rest (no overlap). OOD windows come from series never trained on; at most `max_windows_per_series` evaluation
    windows per series, so that no single long series dominates the averages.
    """
    if source == "corpus":
        from paperzoo.timeseries.data.corpus import split_corpus  # type: ignore[attr-defined]

        pretrain, held_out = split_corpus()
        pretrain_values = [np.asarray(s.values, np.float64) for s in pretrain]
        ood_values = [np.asarray(s.values, np.float64) for s in held_out]
    elif source == "synthetic":
        pretrain_values = generated_series(n_generated, generated_length, seed)
        ood_values = [values for _, values in real_ood_series()]
    else:
        raise DataError(f"unknown source {source!r}; expected 'corpus' or 'synthetic'")
    train, id_val, ood = [], [], []
    for values in pretrain_values:
        cut = int(round(len(values) * (1 - val_fraction)))
        train.append(windows(values[:cut], window, stride))
        id_val.append(windows(values[cut:], window, stride, max_windows_per_series))
    for values in ood_values:
        ood.append(windows(values, window, stride, max_windows_per_series))
    return ScalingSplit(
        train=_stack(train, window, "training"),
        id_val=_stack(id_val, window, "ID validation"),
        ood=_stack(ood, window, "OOD"),
        source=source,
        n_pretrain_series=sum(len(w) > 0 for w in train),
        n_ood_series=sum(len(w) > 0 for w in ood),
    )
