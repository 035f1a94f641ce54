"""Method card of the vector index (`paperzoo run index`). The index is shared infrastructure, not a CATALOG
paper, so its `number` is 0; its approximate search is HNSW, the paper named here, and its claim check measures
HNSW (and IVF) against exact search on MiniLM embeddings of the Wikipedia passage benchmark."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="index",
    number=0,
    title="Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small World graphs",
    arxiv="1603.09320",
    kind="inference",
    domain="retrieval",
    entry_points=(
        "paperzoo.retrieval.index.dense:DenseIndex",
        "paperzoo.retrieval.index.multivector:MultiVectorStore",
        "paperzoo.retrieval.index.run:build_and_search",
        "paperzoo.retrieval.index.run:encode_texts",
    ),
    claim="An HNSW graph returns nearly the exact nearest neighbours (recall@10 >= 0.95 against exhaustive search, "
    "the same nDCG@10) while computing distances to only a fraction of the corpus per query.",
    reference_code="https://github.com/nmslib/hnswlib",
    config_package="paperzoo.retrieval.index.configs",
    check="paperzoo.retrieval.index.check:check",
    run="paperzoo.retrieval.index.run:build_and_search",
)
