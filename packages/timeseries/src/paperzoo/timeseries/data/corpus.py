"""Series corpus (placeholder while the corpus lands): sampling resolutions."""

import numpy as np
import pandas as pd

from paperzoo.core.errors import ConfigError
from paperzoo.timeseries.data.table import modal_step

RESOLUTIONS: tuple[str, ...] = ("30min", "H", "D", "W", "M", "Q", "A")


def resolution_id(frequency: str) -> int:
    """The integer id of a sampling resolution (its position in `RESOLUTIONS`)."""
    if frequency not in RESOLUTIONS:
        raise ConfigError(f"unknown resolution {frequency!r}; expected one of {RESOLUTIONS}")
    return RESOLUTIONS.index(frequency)


def infer_resolution(index: pd.DatetimeIndex) -> str:
    """The nearest of `RESOLUTIONS` to the modal step of `index` (trading days count as "D")."""
    if len(index) < 2:
        return "D"
    days = modal_step(index) / pd.Timedelta(days=1)
    targets = {"30min": 1 / 48, "H": 1 / 24, "D": 1.0, "W": 7.0, "M": 30.4, "Q": 91.3, "A": 365.25}
    return min(targets, key=lambda name: abs(np.log(days / targets[name])))
