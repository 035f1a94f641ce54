"""S4 (CATALOG 44, arXiv:2111.00396): the DPLR structured state-space layer as a token mixer, its card and check."""

from paperzoo.efficiency.sequence.s4.model import S4Mixer

__all__ = ["S4Mixer"]
