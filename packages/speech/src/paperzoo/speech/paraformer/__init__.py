"""Paraformer (CATALOG 5, arXiv:2206.08317): CIF predictor, single-step NAR decoder, GLM sampler and MWER training,
its task, card and claim check against autoregressive and CTC baselines on the same encoder."""

from paperzoo.speech.paraformer.cif import CIFPredictor, cif, quantity_loss
from paperzoo.speech.paraformer.decoder import ParaformerDecoder
from paperzoo.speech.paraformer.glm import glancing_count, glancing_embeddings, glancing_mask
from paperzoo.speech.paraformer.model import Paraformer
from paperzoo.speech.paraformer.mwer import mwer_loss, sample_candidates

__all__ = [
    "CIFPredictor",
    "Paraformer",
    "ParaformerDecoder",
    "cif",
    "glancing_count",
    "glancing_embeddings",
    "glancing_mask",
    "mwer_loss",
    "quantity_loss",
    "sample_candidates",
]
