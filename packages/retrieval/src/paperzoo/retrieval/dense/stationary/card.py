"""The method card of stationary representations with the d-Simplex fixed classifier (CATALOG 42)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="stationary",
    number=42,
    title=(
        "Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model "
        "Replacements"
    ),
    arxiv="2405.02581",
    kind="train",
    domain="retrieval",
    entry_points=(
        "paperzoo.retrieval.dense.stationary.model:dsimplex",
        "paperzoo.retrieval.dense.stationary.model:FixedSimplexClassifier",
        "paperzoo.retrieval.dense.stationary.model:StationaryModel",
        "paperzoo.retrieval.dense.stationary.model:bct_influence_loss",
        "paperzoo.retrieval.dense.stationary.compatibility:compatibility_matrix",
        "paperzoo.retrieval.dense.stationary.compatibility:empirical_compatibility",
        "paperzoo.retrieval.dense.stationary.compatibility:ecc",
        "paperzoo.retrieval.dense.stationary.compatibility:average_compatibility",
        "paperzoo.retrieval.dense.stationary.compatibility:pairwise_compatibility",
        "paperzoo.retrieval.data.module:RetrievalDataModule",
    ),
    claim=(
        "Features trained against a fixed d-Simplex classifier are stationary: after model updates and a model "
        "replacement, new queries search the old gallery at least as well as the old model did (empirical "
        "compatibility criterion) without re-indexing, which a learnable classifier does not achieve."
    ),
    reference_code="https://github.com/miccunifi/iamcl2r",
    config_package="paperzoo.retrieval.dense.stationary.configs",
    check="paperzoo.retrieval.dense.stationary.check:check",
    task="paperzoo.retrieval.dense.stationary.task:StationaryTask",
)
