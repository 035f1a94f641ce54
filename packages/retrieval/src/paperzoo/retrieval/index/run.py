"""`paperzoo run index`: embed a benchmark's corpus with all-MiniLM-L6-v2, build a faiss index, save it, query it.

    paperzoo run index --config index/flat_wikipedia       (or a YAML path; any argument also as --name value)

The sentence embedding is MiniLM's own (mean-pooled token states, L2-normalised: what sentence-transformers'
all-MiniLM-L6-v2 returns), so inner-product search is cosine search. The index is written atomically to
`<output_dir>/<benchmark>_<split>_<kind>.index` and reloaded from there before it is queried, so the figures are
those of the file on disk. Ranking metrics use the top `top_k` hits per query (documents not retrieved rank last).
"""

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.io import atomic_write_text
from paperzoo.retrieval.encoder import MiniLMEncoder, mean_pool, tokenize
from paperzoo.retrieval.index.dense import DenseIndex, IndexKind
from paperzoo.retrieval.metrics import retrieval_metrics


@torch.no_grad()
def encode_texts(encoder: MiniLMEncoder, texts: Sequence[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Unit-length sentence embeddings [N, D] of `texts` (mean-pooled MiniLM token states, L2-normalised).

    Texts are batched in order of length, so each batch pads to similar lengths (much less work on a CPU); the
    rows come back in the order of `texts`.
    """
    require(batch_size >= 1, f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embeddings = torch.zeros(len(texts), encoder.dim)
    was_training = encoder.training
    encoder.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenize([texts[i] for i in rows], max_length)
        tokens = encoder(batch["input_ids"], batch["attention_mask"])  # [B, L, D]
        embeddings[rows] = torch.nn.functional.normalize(mean_pool(tokens, batch["attention_mask"]), dim=-1)
    encoder.train(was_training)
    return embeddings


def build_and_search(
    source: str = "wikipedia",
    path: str | None = None,
    split: Literal["dev", "test"] = "test",
    max_documents: int | None = None,
    kind: IndexKind = "flat",
    nlist: int | None = None,
    nprobe: int = 8,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 64,
    top_k: int = 100,
    max_query_length: int = 32,
    max_doc_length: int = 128,
    batch_size: int = 64,
    output_dir: str = "outputs/index",
    pretrained: bool = True,
    num_layers: int = 6,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """Embed the corpus of one split of a benchmark with MiniLM, index it with faiss, save, reload and query it.

    Args:
        source: the offline benchmark, "wikipedia" (passages of gensim's Wikipedia sample) or "stdlib" (Python
            standard-library code search); ignored when `path` is given.
        path: a BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) instead of `source`.
        split: which split's corpus and queries to index and search.
        max_documents: use only the first N articles/modules of the offline source (quick runs).
        kind: "flat" (exact), "ivf" or "hnsw" (approximate); see `DenseIndex` for the other index settings.
        nlist, nprobe: IVF lists (None: about 4 sqrt(N)) and lists probed per query.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and candidate-list sizes.
        top_k: hits retrieved per query (recall@k is reported for 10 and, when top_k >= 100, 100).
        max_query_length, max_doc_length: tokens per query / document.
        batch_size: texts per encoder forward pass.
        output_dir: where the index file and its metrics JSON are written.
        pretrained: the packaged all-MiniLM-L6-v2 weights; False builds a random `num_layers`-layer encoder
            of the same architecture (tests and smoke runs only: its rankings are meaningless).
        num_layers: layers of the non-pretrained encoder.
        seed: seeds the offline benchmark's split (and a non-pretrained encoder's weights).

    Returns:
        ndcg@10, mrr@10, recall@10, recall@100, queries_per_s (index search only, after embedding), the index
        file's bytes_on_disk, documents, queries, encode_s, build_s and the index path.
    """
    from paperzoo.retrieval.data.beir import load_beir
    from paperzoo.retrieval.data.module import RetrievalDataModule

    # every argument is checked before the benchmark is built, the encoder loaded or anything is embedded
    require(split in ("dev", "test"), f"split must be 'dev' or 'test', got {split!r}")
    require(top_k >= 10, f"top_k must be at least 10 (nDCG@10 and MRR@10 need the top 10), got {top_k}")
    require(batch_size >= 1, f"batch_size must be at least 1, got {batch_size}")
    require(num_layers >= 1, f"num_layers must be at least 1, got {num_layers}")
    for name, length in (("max_query_length", max_query_length), ("max_doc_length", max_doc_length)):
        require(length >= 2, f"{name} must be at least 2 ([CLS] and [SEP]), got {length}")
    DenseIndex(1, kind, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} exists and is not a directory")
    if path is not None:  # only the searched split's qrels are needed (many BEIR sets have only test)
        benchmark = load_beir(path, split)
    else:
        splits = RetrievalDataModule(source=source, max_documents=max_documents, seed=seed).splits
        benchmark = splits.test if split == "test" else splits.dev
    if kind == "ivf" and nlist is not None and nlist > len(benchmark.corpus):
        raise ConfigError(f"nlist={nlist} exceeds the {len(benchmark.corpus)} documents of {benchmark.name}")

    with torch.random.fork_rng():  # a non-pretrained encoder's random weights follow `seed`
        torch.manual_seed(seed)
        encoder = MiniLMEncoder(trainable_layers=0, pretrained=pretrained, num_layers=num_layers)
    started = time.perf_counter()
    documents = encode_texts(encoder, list(benchmark.corpus.values()), max_doc_length, batch_size)  # [N, 384]
    queries = encode_texts(encoder, list(benchmark.queries.values()), max_query_length, batch_size)  # [Q, 384]
    encode_s = time.perf_counter() - started

    started = time.perf_counter()
    settings = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m}
    index = DenseIndex.build(
        documents, kind, normalize=True, ef_construction=ef_construction, ef_search=ef_search, **settings
    )
    build_s = time.perf_counter() - started
    stem = benchmark.name.replace("/", "_")
    index_path = out / f"{stem}_{kind}.index"
    index.save(index_path)
    index = DenseIndex.load(index_path)

    started = time.perf_counter()
    scores = index.score_matrix(queries, top_k)  # [Q, N], -inf beyond the top_k
    search_s = time.perf_counter() - started
    recall_at = (10, 100) if top_k >= 100 else (10,)
    metrics = retrieval_metrics(scores, benchmark.relevance(), recall_at=recall_at)
    result: dict[str, float | int | str] = {
        **{name: round(value, 4) for name, value in metrics.items()},
        "queries_per_s": round(len(benchmark.queries) / max(search_s, 1e-9), 1),
        "bytes_on_disk": index.bytes_on_disk(),
        "documents": len(benchmark.corpus),
        "queries": len(benchmark.queries),
        "kind": kind,
        "nlist": index.nlist if kind == "ivf" else 0,
        "encode_s": round(encode_s, 2),
        "build_s": round(build_s, 3),
        "index": str(index_path),
    }
    atomic_write_text(out / f"{stem}_{kind}.json", json.dumps(result, indent=2) + "\n")
    return result
