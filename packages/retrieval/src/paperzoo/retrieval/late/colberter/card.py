"""The method card of ColBERTer (CATALOG 33)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="colberter",
    number=33,
    title=(
        "Introducing Neural Bag of Whole-Words with ColBERTer: Contextualized Late Interactions using Enhanced "
        "Reduction"
    ),
    arxiv="2203.13088",
    kind="train",
    domain="retrieval",
    entry_points=(
        "paperzoo.retrieval.late.colberter.model:ColBERTer",
        "paperzoo.retrieval.late.colberter.model:colberter",
        "paperzoo.retrieval.late.colberter.model:uni_colberter",
        "paperzoo.retrieval.late.colberter.model:colbert_baseline",
        "paperzoo.retrieval.late.colberter.model:bow2_pool",
        "paperzoo.retrieval.late.colberter.model:exact_match_maxsim",
        "paperzoo.retrieval.data.module:RetrievalDataModule",
    ),
    claim=(
        "ColBERTer's reductions (unique whole-word vectors, contextualised stopwords, small token dimensions, plus a "
        "single vector) store an index at least 2x smaller than plain ColBERT token storage at about equal MRR@10, "
        "degrading gracefully down to one dimension per word."
    ),
    reference_code="https://github.com/sebastian-hofstaetter/colberter (training: sebastian-hofstaetter/matchmaker)",
    config_package="paperzoo.retrieval.late.colberter.configs",
    check="paperzoo.retrieval.late.colberter.check:check",
    task="paperzoo.retrieval.late.colberter.task:ColBERTerTask",
)
