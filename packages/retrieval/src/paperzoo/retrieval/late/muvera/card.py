"""The method card of MUVERA (CATALOG 82)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="muvera",
    number=82,
    title="MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings",
    arxiv="2405.19504",
    kind="inference",
    domain="retrieval",
    entry_points=(
        "paperzoo.retrieval.late.muvera.fde:FDEConfig",
        "paperzoo.retrieval.late.muvera.fde:encode_queries",
        "paperzoo.retrieval.late.muvera.fde:encode_documents",
        "paperzoo.retrieval.late.muvera.pipeline:MuveraRetriever",
        "paperzoo.retrieval.late.muvera.pipeline:chamfer_search",
        "paperzoo.retrieval.late.muvera.pipeline:token_sets",
        "paperzoo.retrieval.late.muvera.pipeline:run_muvera",
    ),
    claim=(
        "FDE retrieval followed by exact Chamfer reranking reaches the recall of brute-force Chamfer search with "
        "several times fewer candidates than single-vector or token-level candidate generation, in less time."
    ),
    reference_code="https://github.com/google/graph-mining (sketching/point_cloud), https://github.com/craftsangjae/muvera-python",
    config_package="paperzoo.retrieval.late.muvera.configs",
    check="paperzoo.retrieval.late.muvera.check:check",
    run="paperzoo.retrieval.late.muvera.pipeline:run_muvera",
)
