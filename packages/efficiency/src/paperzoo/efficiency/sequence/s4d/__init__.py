"""S4D (CATALOG 66, arXiv:2206.11893): the diagonal state-space layer as a token mixer, its card and check."""

from paperzoo.efficiency.sequence.s4d.model import S4DMixer

__all__ = ["S4DMixer"]
