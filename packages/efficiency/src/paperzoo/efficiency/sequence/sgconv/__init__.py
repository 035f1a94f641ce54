"""SGConv (CATALOG 71): "What Makes Convolutional Models Great on Long Sequence Modeling?", arXiv:2210.09298."""

from paperzoo.efficiency.sequence.sgconv.model import SGConvMixer, fft_conv, multiscale_kernel, toeplitz

__all__ = ["SGConvMixer", "fft_conv", "multiscale_kernel", "toeplitz"]
