"""The unified view of long-sequence models (CATALOG 110, arXiv:2302.06218): every mixer as y = M(x) V x.

The interface itself is `paperzoo.efficiency.sequence.mixer.TokenMixer`; this subpackage holds the paper's card, its
claim check and a training config.
"""
