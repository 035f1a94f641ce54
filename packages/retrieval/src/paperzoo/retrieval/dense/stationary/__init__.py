"""Stationary representations (CATALOG 42): Biondi et al., "Stationary Representations: Optimally Approximating
Compatibility and Implications for Improved Model Replacements", CVPR 2024, https://arxiv.org/abs/2405.02581.

- `model`: the d-Simplex fixed classifier (`dsimplex`, `FixedSimplexClassifier`) on MiniLM (`StationaryModel`),
  and the BCT influence-loss baseline;
- `compatibility`: the compatibility criteria (pairwise inequalities, empirical criterion, ECC, AC, AM);
- `task`: `StationaryTask`, passage-to-article classification through the CLI;
- `check`: the class-incremental model-replacement claim check.
"""

from paperzoo.retrieval.dense.stationary.compatibility import (
    average_compatibility,
    average_multimodel_accuracy,
    compatibility_matrix,
    ecc,
    empirical_compatibility,
    identification_accuracy,
    mean_average_precision,
    pairwise_compatibility,
)
from paperzoo.retrieval.dense.stationary.model import (
    FixedSimplexClassifier,
    StationaryModel,
    bct_influence_loss,
    dsimplex,
    synthesize_old_classifier,
)

__all__ = [
    "FixedSimplexClassifier",
    "StationaryModel",
    "average_compatibility",
    "average_multimodel_accuracy",
    "bct_influence_loss",
    "compatibility_matrix",
    "dsimplex",
    "ecc",
    "empirical_compatibility",
    "identification_accuracy",
    "mean_average_precision",
    "pairwise_compatibility",
    "synthesize_old_classifier",
]
