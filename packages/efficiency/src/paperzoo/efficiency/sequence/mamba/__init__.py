"""Mamba (CATALOG 96, arXiv:2312.00752): the selective scan and the Mamba block as a `TokenMixer`."""

from paperzoo.efficiency.sequence.mamba.block import MambaMixer
from paperzoo.efficiency.sequence.mamba.scan import linear_scan, selective_scan, selective_scan_ref

__all__ = ["MambaMixer", "linear_scan", "selective_scan", "selective_scan_ref"]
