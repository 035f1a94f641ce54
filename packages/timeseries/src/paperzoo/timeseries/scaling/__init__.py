"""TSFM scaling laws (CATALOG 79): tiny encoder-only and decoder-only patch Transformers with a Student-t mixture
head, their pretraining task, and the ID/OOD power-law claim check. The power-law fitter lives in
`paperzoo.core.scaling`."""

from paperzoo.timeseries.scaling.model import SIZES, PatchTSFM, StudentTMixtureHead, forecast_nll, tsfm, tsfm_nll

__all__ = ["SIZES", "PatchTSFM", "StudentTMixtureHead", "forecast_nll", "tsfm", "tsfm_nll"]
