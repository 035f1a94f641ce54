"""MUVERA retrieval: FDE maximum-inner-product search for candidates, then exact Chamfer (MaxSim) reranking.

"MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings", https://arxiv.org/abs/2405.19504, Section 3:
documents are indexed once by their FDEs in a single-vector MIPS index (here `paperzoo.retrieval.index.dense.
DenseIndex`, faiss flat, IVF or HNSW); a query's FDE retrieves `candidates` documents, which are reranked by their
exact Chamfer similarity to the query (`paperzoo.retrieval.late.scoring.maxsim`) over their vectors, kept in a
`paperzoo.retrieval.index.multivector.MultiVectorStore` (fp32 by default; fp16 or PQ to save memory).

Deviations: the paper's ball carving, PQ-compressed FDEs and DiskANN graph index are not implemented (faiss' IVF
or HNSW stand in for DiskANN). `run_muvera` embeds text with all-MiniLM-L6-v2's L2-normalised token states, not a
trained ColBERT model.
"""

import hashlib
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError, require
from paperzoo.retrieval.index.dense import DenseIndex, IndexKind
from paperzoo.retrieval.index.multivector import Codec, MultiVectorStore
from paperzoo.retrieval.late.muvera.fde import FDEConfig, encode_documents, encode_queries
from paperzoo.retrieval.late.scoring import maxsim


def chamfer_search(
    queries: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor, doc_mask: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force Chamfer top-k: every document scored exactly. Returns scores, ids [Q, min(k, N)], best first."""
    scores = maxsim(queries, query_mask, docs, doc_mask)  # [Q, N]
    return scores.topk(min(k, scores.shape[1]), dim=1)


def chamfer_rerank(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    store: MultiVectorStore,
    candidate_ids: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Chamfer scores of each query's own candidates, the best `k` first.

    Args:
        queries: [Q, Lq, D], query_mask [Q, Lq].
        store: the documents' vectors (`MultiVectorStore`).
        candidate_ids: [Q, C] document ids; -1 marks a missing candidate (scored -inf).
        k: results kept per query (at most C).

    Returns:
        scores [Q, min(k, C)] and ids [Q, min(k, C)] (ids of missing candidates stay -1).
    """
    scores = torch.full(candidate_ids.shape, float("-inf"))
    for row in range(candidate_ids.shape[0]):
        found = candidate_ids[row] >= 0
        if found.any():
            docs, doc_mask = store.gather(candidate_ids[row][found])  # [c, Ld, D], [c, Ld]
            scores[row, found] = maxsim(queries[row : row + 1], query_mask[row : row + 1], docs, doc_mask)[0]
    best, order = scores.topk(min(k, scores.shape[1]), dim=1)
    return best, candidate_ids.gather(1, order)


class MuveraRetriever:
    """FDE candidates from a single-vector index, reranked by exact Chamfer similarity.

    Build it with `MuveraRetriever.build(doc_vectors, doc_mask, config)`.

    Args:
        config: the FDE (`FDEConfig`).
        index: the MIPS index holding the document FDEs (row i = document i).
        store: the documents' vectors for reranking (document i = row i of the index).
        encode_batch_size: sets per FDE encoding chunk.

    Shapes:
        search: query_vectors [Q, Lq, D], query_mask [Q, Lq] -> scores, ids [Q, k].
    """

    def __init__(self, config: FDEConfig, index: DenseIndex, store: MultiVectorStore, encode_batch_size: int = 256):
        require(len(index) == len(store), f"the index holds {len(index)} documents but the store {len(store)}")
        require(
            index.dim == config.output_dim(store.dim),
            f"the index holds {index.dim}-dimensional vectors, the FDEs have {config.output_dim(store.dim)}",
        )
        self.config, self.index, self.store, self.encode_batch_size = config, index, store, encode_batch_size

    @classmethod
    def build(
        cls,
        doc_vectors: torch.Tensor,
        doc_mask: torch.Tensor | None = None,
        config: FDEConfig | None = None,
        index_kind: IndexKind = "flat",
        store_codec: Codec = "fp32",
        encode_batch_size: int = 256,
        **index_settings: object,
    ) -> "MuveraRetriever":
        """Encode the documents' FDEs into a `DenseIndex` of `index_kind` and keep their vectors for reranking.

        Args:
            doc_vectors: [N, Ld, D] padded sets; doc_mask [N, Ld] (None: all real).
            config: the FDE; None = `FDEConfig()` (k_sim 5, d_proj 16, 20 repetitions).
            index_kind: "flat" (exact MIPS), "ivf" or "hnsw".
            store_codec: how the rerank vectors are stored ("fp32" exact, "fp16" or "pq": `MultiVectorStore`).
            index_settings: further `DenseIndex` arguments (nprobe, hnsw_m, ef_search, ...).
        """
        config = config or FDEConfig()
        if doc_vectors.ndim != 3:
            raise ConfigError(f"doc_vectors must be a padded batch of sets [N, L, D], got {tuple(doc_vectors.shape)}")
        if doc_mask is None:
            doc_mask = torch.ones(doc_vectors.shape[:2], dtype=torch.bool)
        doc_vectors, doc_mask = doc_vectors.detach().float().cpu(), doc_mask.bool().cpu()
        fdes = encode_documents(doc_vectors, doc_mask, config, encode_batch_size)  # [N, F]
        index = DenseIndex.build(fdes, index_kind, **index_settings)
        store = MultiVectorStore.from_padded(doc_vectors, doc_mask, store_codec)
        return cls(config, index, store, encode_batch_size)

    def __len__(self) -> int:
        return len(self.store)

    def candidates(
        self, query_vectors: torch.Tensor, query_mask: torch.Tensor | None, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FDE inner products and ids of the `count` best documents per query: [Q, min(count, N)]."""
        require(count >= 1, f"the number of candidates must be at least 1, got {count}")
        if query_vectors.ndim != 3 or query_vectors.shape[-1] != self.store.dim:
            raise ConfigError(f"query_vectors must be [Q, L, {self.store.dim}], got shape {tuple(query_vectors.shape)}")
        fdes = encode_queries(query_vectors.detach().float().cpu(), query_mask, self.config, self.encode_batch_size)
        return self.index.search(fdes, count)

    def search(
        self, query_vectors: torch.Tensor, query_mask: torch.Tensor | None = None, k: int = 10, candidates: int = 100
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-`k` documents by exact Chamfer similarity among the `candidates` best by FDE.

        Returns:
            Chamfer scores [Q, k'] and document ids [Q, k'], best first, k' = min(k, candidates, N).
        """
        require(k >= 1, f"k must be at least 1, got {k}")
        require(candidates >= k, f"candidates ({candidates}) must be at least k ({k})")
        if query_mask is None:
            query_mask = torch.ones(query_vectors.shape[:2], dtype=torch.bool)
        _, ids = self.candidates(query_vectors, query_mask, candidates)
        return chamfer_rerank(query_vectors.float().cpu(), query_mask.bool().cpu(), self.store, ids, k)


def token_sets(
    texts: Sequence[str], max_length: int, encoder: torch.nn.Module | None = None, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-vector embeddings of texts: all-MiniLM-L6-v2's L2-normalised token states ([CLS] and [SEP] included).

    Returns:
        vectors [N, L, 384] float32 (L = the longest text, at most `max_length` tokens) and mask [N, L] bool.
    """
    from paperzoo.retrieval.encoder import MiniLMEncoder, tokenize

    encoder = encoder if encoder is not None else MiniLMEncoder(trainable_layers=0)
    encoder.eval()
    pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenize(texts[start : start + batch_size], max_length)
            states = encoder(batch["input_ids"], batch["attention_mask"])  # [B, L, 384]
            pieces.append((F.normalize(states, dim=-1), batch["attention_mask"].bool()))
    length = max(v.shape[1] for v, _ in pieces)
    vectors = torch.cat([F.pad(v, (0, 0, 0, length - v.shape[1])) for v, _ in pieces])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in pieces])
    return vectors * mask[..., None], mask


def cached_token_sets(texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_sets` with the pretrained MiniLM, cached on disk (fp16, atomic write) under
    `cache_dir("retrieval", "muvera")`, keyed by a digest of the texts and `max_length`: embedding a few thousand
    passages takes minutes on two CPU cores."""
    from paperzoo.core.io import atomic_torch_save, cache_dir, load_checkpoint_file

    digest = hashlib.sha256(f"all-MiniLM-L6-v2 tokens v1 {max_length}".encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    path = cache_dir("retrieval", "muvera") / f"tokens-{digest.hexdigest()[:20]}.pt"
    if path.is_file():
        saved = load_checkpoint_file(path)
        return saved["vectors"].float(), saved["mask"]
    vectors, mask = token_sets(texts, max_length)
    atomic_torch_save({"vectors": vectors.half(), "mask": mask}, path)
    return vectors.half().float(), mask  # what a cache hit returns


def timed(function, *args, repeats: int = 1, **kwargs):  # noqa: ANN001, ANN201 - a thin timing wrapper
    """(result of the last call, best wall-clock seconds over `repeats` calls)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return result, best


def recall_of_true_top(found_ids: torch.Tensor, true_ids: torch.Tensor) -> float:
    """Mean over queries of |found ∩ true| / |true|: found_ids [Q, C], true_ids [Q, k]."""
    hits = (found_ids[:, :, None] == true_ids[:, None, :]).any(1)  # [Q, k]
    return float(hits.float().mean())


def run_muvera(
    source: str = "wikipedia",
    split: str = "test",
    max_documents: int | None = None,
    k_sim: int = 5,
    d_proj: int | None = 16,
    repetitions: int = 20,
    final_dim: int | None = None,
    projection: str = "ams",
    seed: int = 0,
    index_kind: str = "flat",
    k: int = 10,
    candidates: int = 100,
    max_query_length: int = 32,
    max_doc_length: int = 128,
    threads: int = 1,
) -> dict[str, float]:
    """`paperzoo run muvera`: MUVERA search on a passage benchmark embedded with MiniLM token states, against
    brute-force Chamfer search over every passage, in the same process.

    Args:
        source: "wikipedia" or "stdlib" (`RetrievalDataModule`'s sources).
        split: "train", "dev" or "test".
        max_documents: use only the first N source articles/modules (small runs).
        k_sim, d_proj, repetitions, final_dim, projection, seed: the FDE (`FDEConfig`).
        index_kind: the FDE index, "flat", "ivf" or "hnsw".
        k: results per query.
        candidates: FDE candidates reranked by Chamfer per query.
        max_query_length, max_doc_length: tokens per query / passage.
        threads: torch intra-op threads for the timed part.

    Returns:
        queries/s of MUVERA and of brute force, their ratio, recall@k of the brute-force Chamfer top-k, nDCG@10
        and recall@k against the qrels for both, the FDE dimension and the sizes.
    """
    from paperzoo.core.checks import torch_threads
    from paperzoo.retrieval.metrics import retrieval_metrics

    require(split in ("train", "dev", "test"), f"split must be 'train', 'dev' or 'test', got {split!r}")
    require(index_kind in ("flat", "ivf", "hnsw"), f"index_kind must be 'flat', 'ivf' or 'hnsw', got {index_kind!r}")
    require(candidates >= k >= 1, f"need candidates >= k >= 1, got candidates={candidates}, k={k}")
    config = FDEConfig(k_sim, d_proj, repetitions, final_dim, seed, True, projection)  # type: ignore[arg-type]
    benchmark = getattr(load_splits(source, max_documents), split)
    docs, doc_mask = cached_token_sets([benchmark.corpus[d] for d in benchmark.doc_ids], max_doc_length)
    queries, query_mask = cached_token_sets([benchmark.queries[q] for q in benchmark.query_ids], max_query_length)
    with torch_threads(threads):
        retriever, build_s = timed(MuveraRetriever.build, docs, doc_mask, config, index_kind)  # type: ignore[arg-type]
        (ours_scores, ours_ids), ours_s = timed(retriever.search, queries, query_mask, k, candidates, repeats=3)
        (true_scores, true_ids), brute_s = timed(chamfer_search, queries, query_mask, docs, doc_mask, k, repeats=3)
    relevance = benchmark.relevance()

    def as_matrix(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        matrix = torch.full(relevance.shape, float("-inf"))
        return matrix.scatter_(1, ids.clamp_min(0), scores)

    ours_metrics = retrieval_metrics(as_matrix(ours_scores, ours_ids), relevance, recall_at=(k,))
    brute_metrics = retrieval_metrics(as_matrix(true_scores, true_ids), relevance, recall_at=(k,))
    n_queries = queries.shape[0]
    return {
        "documents": float(len(retriever)),
        "queries": float(n_queries),
        "fde dim": float(config.output_dim(docs.shape[-1])),
        "index build s": build_s,
        "muvera queries/s": n_queries / ours_s,
        "brute-force queries/s": n_queries / brute_s,
        "speed-up": brute_s / ours_s,
        f"recall@{k} of the Chamfer top-{k}": recall_of_true_top(ours_ids, true_ids),
        **{f"muvera {name}": value for name, value in ours_metrics.items()},
        **{f"brute-force {name}": value for name, value in brute_metrics.items()},
    }


def load_splits(source: str, max_documents: int | None):  # noqa: ANN201 - BenchmarkSplits, imported lazily
    """The benchmark splits of `source` ("wikipedia" or "stdlib"), through the data module's builders."""
    from paperzoo.retrieval.data.module import RetrievalDataModule

    data = RetrievalDataModule(source=source, max_documents=max_documents)
    data.setup("fit")
    return data.splits


__all__ = [
    "MuveraRetriever",
    "chamfer_rerank",
    "chamfer_search",
    "recall_of_true_top",
    "run_muvera",
    "token_sets",
]
