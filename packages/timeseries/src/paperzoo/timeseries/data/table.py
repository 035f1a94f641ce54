"""Reading and validating a wide time-series table (rows = time steps, columns = channels).

The standard format is the ETT CSV of Informer (arXiv:2012.07436), `date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT`, and more
generally any CSV or parquet file with one datetime column and numeric channel columns. `validate_table` turns a
raw frame into the table every datamodule of the package trusts: a strictly increasing `DatetimeIndex` and finite
float64 channels. Every rule is applied in this order, and bad input gets a one-sentence `DataError` naming the
source, the column and the timestamp; nothing is silently dropped or reordered:

1. Timestamps: a missing or unparseable date is an error (the row number and the raw value are named). Time-zone
   aware timestamps are converted to UTC and made naive, so calendar features are UTC-based.
2. A duplicate timestamp is an error (two rows for one step would make a window straddle two versions of it).
3. Timestamps that go backwards are an error: the table is never sorted for the user, since an unsorted export
   usually means a broken file (e.g. two files concatenated).
4. Channels: every selected column must be numeric (booleans become 0/1); a non-numeric value is an error naming the
   column, the timestamp and the value; +-inf is an error too.
5. Frequency: with a declared frequency (e.g. "h"), the table is reindexed onto the regular grid from its first to
   its last timestamp, so missing steps become NaN rows and go through rule 6; a timestamp off that grid is an
   error. With `frequency="infer"` the modal step between rows is used, and the table is reindexed only when that
   step is shorter than a day (hourly sensors: a missing hour is a gap); daily or coarser tables (trading days, a
   business calendar) are taken row by row as they are. With `frequency=None` rows are steps, no reindexing.
6. Missing values: a run of at most `interpolate_limit` consecutive NaNs strictly inside a column is filled by
   linear interpolation between its two neighbours (on the regular grid, linear in time). A longer run, or NaNs
   at the very start or end of a column (which have only one neighbour, so interpolation would be extrapolation),
   is an error naming the column, the first missing timestamp and the run length.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from paperzoo.core.errors import DataError

DEFAULT_DATE_COLUMN = "date"


def read_table(
    path: str | Path,
    date_column: str = DEFAULT_DATE_COLUMN,
    columns: Sequence[str] | None = None,
    frequency: str | None = "infer",
    interpolate_limit: int = 6,
) -> pd.DataFrame:
    """Read a CSV (`.csv`, `.csv.gz`, `.txt`) or parquet (`.parquet`, `.pq`) table and validate it.

    Args:
        path: the file.
        date_column: the datetime column (ETT: "date").
        columns: the channel columns to keep, in this order; None keeps every column but the date column.
        frequency: see `validate_table`.
        interpolate_limit: longest run of missing values filled by linear interpolation (see module docstring).

    Returns:
        The validated table: a strictly increasing `DatetimeIndex` named after `date_column`, float64 columns.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".txt") or suffixes.endswith(".csv.gz"):
            frame = pd.read_csv(path)
        else:
            raise DataError(f"data file {path} is neither CSV (.csv, .csv.gz) nor parquet (.parquet)")
    except (ValueError, OSError, pd.errors.ParserError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"data file {path} could not be read ({err})") from err
    if date_column not in frame.columns:
        raise DataError(f"data file {path} has no date column {date_column!r} (columns: {list(frame.columns)})")
    return validate_table(
        frame.set_index(date_column),
        source=str(path),
        columns=columns,
        frequency=frequency,
        interpolate_limit=interpolate_limit,
    )


def validate_table(
    frame: pd.DataFrame,
    source: str,
    columns: Sequence[str] | None = None,
    frequency: str | None = "infer",
    interpolate_limit: int = 6,
) -> pd.DataFrame:
    """Validate a frame indexed by timestamps (rules 1-6 of the module docstring).

    Args:
        frame: index = timestamps (any parseable form), columns = channels.
        source: what to call the data in error messages (a file name or a dataset name).
        columns: channel columns to keep, in this order; None keeps all.
        frequency: a pandas offset alias to reindex onto ("h", "30min", "D", ...), "infer" (reindex only when the
            modal step is sub-daily) or None (rows are steps).
        interpolate_limit: longest interior run of NaNs filled by linear interpolation; 0 disables filling.

    Returns:
        A new frame: strictly increasing naive `DatetimeIndex`, float64 channels without NaN.
    """
    if interpolate_limit < 0:
        raise DataError(f"interpolate_limit must be >= 0, got {interpolate_limit}")
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{source} has no column(s) {missing} (columns: {list(frame.columns)})")
        frame = frame[list(columns)]
    if frame.shape[1] == 0:
        raise DataError(f"{source} has no channel columns besides the date column")
    index = parse_timestamps(frame.index, source)
    frame = frame.set_axis(index, axis=0)
    check_order(index, source)
    frame = to_numeric(frame, source)
    if frequency == "infer":
        frequency = infer_frequency(index, reindex_only_subdaily=True)
    if frequency is not None:
        frame = reindex_regular(frame, frequency, source)
    return fill_gaps(frame, interpolate_limit, source)


def parse_timestamps(raw: pd.Index, source: str) -> pd.DatetimeIndex:
    """Rule 1: every timestamp parses; tz-aware ones become naive UTC."""
    name = raw.name or DEFAULT_DATE_COLUMN
    if isinstance(raw, pd.DatetimeIndex):
        index = raw
    else:
        # numbers are parsed as their digits (20160701, yymmdd), never as nanoseconds since 1970
        values = pd.Series(raw.astype(str) if pd.api.types.is_numeric_dtype(raw) else raw, dtype=object)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "could not infer format": parsed one by one, fine
                parsed = pd.to_datetime(values, errors="coerce", utc=_mixed_timezones(values))
        except (ValueError, TypeError) as err:
            raise DataError(f"{source}: column {name!r} could not be parsed as dates ({err})") from err
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            raise DataError(
                f"{source}: column {name!r} has a missing or unparseable date {values.iloc[bad[0]]!r} at row {bad[0]}"
            )
        index = pd.DatetimeIndex(parsed)
    if index.hasnans:
        raise DataError(f"{source}: column {name!r} has a missing date at row {int(np.flatnonzero(index.isna())[0])}")
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.rename(name)


def _mixed_timezones(values: pd.Series) -> bool:
    # strings like "2013-01-01T06:00:00Z" parse as aware; parse everything to UTC when any carries a zone
    sample = values.dropna().astype(str).head(50)
    return bool(sample.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).any())


def check_order(index: pd.DatetimeIndex, source: str) -> None:
    """Rules 2 and 3: no duplicate timestamp, no step backwards."""
    steps = np.diff(index.asi8)
    if (steps == 0).any():
        i = int(np.flatnonzero(steps == 0)[0]) + 1
        raise DataError(f"{source}: timestamp {index[i]} appears twice (rows {i - 1} and {i}); expected unique times")
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0]) + 1
        raise DataError(
            f"{source}: timestamps are not increasing: {index[i]} at row {i} comes after {index[i - 1]}; "
            "expected a chronologically sorted table"
        )


def to_numeric(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rule 4: numeric, finite-or-NaN float64 channels."""
    out = {}
    for column in frame.columns:
        series = frame[column]
        if series.dtype == bool:
            series = series.astype(np.float64)
        if not pd.api.types.is_numeric_dtype(series):
            converted = pd.to_numeric(series, errors="coerce")
            bad = np.flatnonzero(converted.isna().to_numpy() & series.notna().to_numpy())
            if len(bad):
                raise DataError(
                    f"{source}: column {column!r} has a non-numeric value {series.iloc[bad[0]]!r} "
                    f"at {frame.index[bad[0]]}"
                )
            series = converted
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(values).any():
            i = int(np.flatnonzero(np.isinf(values))[0])
            raise DataError(f"{source}: column {column!r} has an infinite value at {frame.index[i]}")
        out[str(column)] = values
    return pd.DataFrame(out, index=frame.index)


def modal_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common step between consecutive timestamps (the smallest one on ties)."""
    steps = pd.Series(np.diff(index.to_numpy()))
    return pd.Timedelta(steps.mode().iloc[0])


def infer_frequency(index: pd.DatetimeIndex, reindex_only_subdaily: bool = False) -> str | None:
    """The modal step between consecutive timestamps as a pandas offset alias (e.g. "h", "30min", "D").

    With `reindex_only_subdaily`, None for steps of a day or more (rows are then taken as steps).
    """
    if len(index) < 2:
        return None
    step = modal_step(index)
    if reindex_only_subdaily and step >= pd.Timedelta(days=1):
        return None
    return pd.tseries.frequencies.to_offset(step).freqstr


def reindex_regular(frame: pd.DataFrame, frequency: str, source: str) -> pd.DataFrame:
    """Rule 5: put the table on the regular grid `frequency` from its first to its last timestamp."""
    try:
        grid = pd.date_range(frame.index[0], frame.index[-1], freq=frequency, name=frame.index.name)
    except ValueError as err:
        raise DataError(f"{source}: frequency {frequency!r} is not a pandas offset alias ({err})") from err
    off_grid = ~frame.index.isin(grid)
    if off_grid.any():
        raise DataError(
            f"{source}: timestamp {frame.index[off_grid][0]} is not on the regular {frequency!r} grid starting at "
            f"{frame.index[0]}"
        )
    return frame.reindex(grid)


def nan_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Runs of NaN in a 1-D array as (start, length), in order."""
    missing = np.isnan(values).astype(np.int8)
    edges = np.diff(np.concatenate([[0], missing, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def fill_gaps(frame: pd.DataFrame, interpolate_limit: int, source: str) -> pd.DataFrame:
    """Rule 6: linear interpolation of interior NaN runs up to `interpolate_limit` steps, an error otherwise."""
    out = {}
    positions = np.arange(len(frame), dtype=np.float64)
    for column in frame.columns:
        values = frame[column].to_numpy(dtype=np.float64, copy=True)
        runs = nan_runs(values)
        for start, length in runs:
            at_edge = start == 0 or start + length == len(values)
            if at_edge or length > interpolate_limit:
                where = "at the start" if start == 0 else "at the end" if at_edge else "inside the series"
                raise DataError(
                    f"{source}: column {column!r} has {length} consecutive missing value(s) {where} from "
                    f"{frame.index[start]}; only interior gaps of at most interpolate_limit={interpolate_limit} "
                    "steps are interpolated"
                )
        if runs:
            known = ~np.isnan(values)
            values[~known] = np.interp(positions[~known], positions[known], values[known])
        out[column] = values
    return pd.DataFrame(out, index=frame.index)
