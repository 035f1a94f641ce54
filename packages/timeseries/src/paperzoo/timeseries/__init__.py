"""paperzoo time series: forecasting datamodules over real offline series, TSMixer, TTM, MIGA and TSFM scaling laws."""
