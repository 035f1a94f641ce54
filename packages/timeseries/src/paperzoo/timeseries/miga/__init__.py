"""MIGA: Mixture-of-Experts with Group Aggregation for stock market prediction (arXiv 2410.02241, CATALOG 17)."""

from paperzoo.timeseries.miga.data import StockPanelDataModule
from paperzoo.timeseries.miga.model import MIGA, PlainMoE, SingleModel, build_model, top_k_weights
from paperzoo.timeseries.miga.task import MIGATask

__all__ = ["MIGA", "MIGATask", "PlainMoE", "SingleModel", "StockPanelDataModule", "build_model", "top_k_weights"]
