"""MUVERA: FDE encoding throughput against muvera-python, and search on the Wikipedia benchmark against brute force.

1. Encoding: our `encode_documents` / `encode_queries` and muvera-python's `Muvera.encode_documents` /
   `encode_queries` (numpy + Rust kernels) on the same variable-length sets of random unit vectors with the same
   settings (the paper's default k_sim=5, d_proj=16 AMS, R=20, and an identity-projection variant). Ours is timed
   from the same list of [n_i, D] arrays (padding included). Rounds alternate between the two in one process; the
   median is reported.
2. Search: the Wikipedia passage benchmark (test split) as all-MiniLM-L6-v2 token states (cached by
   `paperzoo.retrieval.late.muvera.pipeline.cached_token_sets`): queries/s of MUVERA (query FDEs, exact faiss MIPS,
   Chamfer rerank of `--candidates`) and of brute-force Chamfer over every passage, and MUVERA's recall@10 of the
   brute-force top-10.

    uv run --group peers python benchmarks/perf/muvera_vs_muvera_python.py [--threads 1] [--rounds 5] ...

It prints a table and writes `benchmarks/perf/results/muvera_vs_muvera_python.json` (rendered by `paperzoo report`).
"""

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from paperzoo.core.io import atomic_write_text
from paperzoo.core.profiling import device_name
from paperzoo.retrieval.late.muvera.fde import FDEConfig, encode_documents, encode_queries
from paperzoo.retrieval.late.muvera.pipeline import MuveraRetriever, cached_token_sets, recall_of_true_top
from paperzoo.retrieval.late.scoring import maxsim

RESULTS = Path(__file__).resolve().parent / "results" / "muvera_vs_muvera_python.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=1000, help="sets encoded per measurement")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (ColBERT's 128)")
    parser.add_argument("--document-lengths", type=int, nargs=2, default=(32, 128))
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--candidates", type=int, default=100, help="MUVERA candidates reranked per query")
    parser.add_argument("--search-queries", type=int, default=300, help="Wikipedia queries timed (0: skip search)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def pad(sets: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sets)
    vectors = torch.zeros(len(sets), length, sets[0].shape[1])
    mask = torch.zeros(len(sets), length, dtype=torch.bool)
    for i, s in enumerate(sets):
        vectors[i, : len(s)] = torch.from_numpy(s)
        mask[i, : len(s)] = True
    return vectors, mask


def seconds(function) -> float:  # noqa: ANN001
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def encoding_rows(args: argparse.Namespace) -> list[dict[str, str]]:
    from muvera import Muvera

    g = torch.Generator().manual_seed(args.seed)
    low, high = args.document_lengths
    doc_lengths = torch.randint(low, high + 1, (args.documents,), generator=g).tolist()
    docs = [F.normalize(torch.randn(n, args.dim, generator=g), dim=-1).numpy() for n in doc_lengths]
    queries = [
        F.normalize(torch.randn(args.query_length, args.dim, generator=g), dim=-1).numpy() for _ in range(args.queries)
    ]
    rows = []
    for config in (FDEConfig(k_sim=5, d_proj=16, repetitions=20), FDEConfig(k_sim=4, d_proj=None, repetitions=5)):
        theirs = Muvera(
            num_repetitions=config.repetitions,
            num_simhash_projections=config.k_sim,
            dimension=args.dim,
            projection_type="identity" if config.d_proj is None else "ams_sketch",
            projection_dimension=config.d_proj,
            seed=config.seed,
        )
        for side, sets, ours_fn, theirs_fn in (
            ("documents", docs, encode_documents, theirs.encode_documents),
            ("queries", queries, encode_queries, theirs.encode_queries),
        ):
            ours_fn(*pad(sets[:8]), config)  # warm-up (random matrices drawn and cached)
            theirs_fn(sets[:8])
            times: dict[str, list[float]] = {"ours": [], "theirs": []}
            for _ in range(args.rounds):
                times["ours"].append(seconds(lambda: ours_fn(*pad(sets), config)))  # noqa: B023
                times["theirs"].append(seconds(lambda: theirs_fn(sets)))  # noqa: B023
            median = {name: statistics.median(values) for name, values in times.items()}
            label = f"k_sim={config.k_sim}, d_proj={config.d_proj or 'identity'}, R={config.repetitions}"
            for name, implementation in (("ours", "paperzoo"), ("theirs", "muvera-python")):
                rows.append(
                    {
                        "benchmark": f"encode {side} ({label}, dim {config.output_dim(args.dim)})",
                        "implementation": implementation,
                        "sets/s": f"{len(sets) / median[name]:,.0f}",
                        "ratio": "reference" if name == "theirs" else f"{median['theirs'] / median['ours']:.2f}x",
                        "recall@10": "",
                    }
                )
    return rows


def search_rows(args: argparse.Namespace) -> tuple[list[dict[str, str]], str]:
    from paperzoo.retrieval.data.wikipedia import wikipedia_passages

    test = wikipedia_passages().test
    docs, doc_mask = cached_token_sets([test.corpus[d] for d in test.doc_ids], 128)
    queries, query_mask = cached_token_sets([test.queries[q] for q in test.query_ids], 32)
    keep = torch.randperm(len(queries), generator=torch.Generator().manual_seed(args.seed))[: args.search_queries]
    queries, query_mask = queries[keep], query_mask[keep]
    config = FDEConfig(k_sim=5, d_proj=16, repetitions=20)
    retriever = MuveraRetriever.build(docs, doc_mask, config)
    times: dict[str, list[float]] = {"muvera": [], "brute": []}
    found = true_ids = None
    for _ in range(args.rounds):
        started = time.perf_counter()
        _, found = retriever.search(queries, query_mask, k=10, candidates=args.candidates)
        times["muvera"].append(time.perf_counter() - started)
        started = time.perf_counter()
        true_ids = maxsim(queries, query_mask, docs, doc_mask).topk(10, dim=1).indices
        times["brute"].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    recall = recall_of_true_top(found, true_ids)
    q = queries.shape[0]
    rows = [
        {
            "benchmark": f"Wikipedia search ({len(docs)} passages, {q} queries, MiniLM tokens)",
            "implementation": f"paperzoo MUVERA (FDE flat MIPS + Chamfer rerank of {args.candidates})",
            "sets/s": f"{q / median['muvera']:,.1f} queries/s",
            "ratio": f"{median['brute'] / median['muvera']:.2f}x",
            "recall@10": f"{recall:.3f}",
        },
        {
            "benchmark": f"Wikipedia search ({len(docs)} passages, {q} queries, MiniLM tokens)",
            "implementation": "brute-force Chamfer (maxsim over every passage)",
            "sets/s": f"{q / median['brute']:,.1f} queries/s",
            "ratio": "reference",
            "recall@10": "1.000",
        },
    ]
    return rows, "Search: FDE k_sim=5, d_proj=16, R=20 (10240 dims); recall@10 of the brute-force Chamfer top-10."


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = encoding_rows(args)
    search_note = ""
    if args.search_queries > 0:
        more, search_note = search_rows(args)
        rows += more
    result = {
        "title": "MUVERA: FDE encoding vs muvera-python; search vs brute-force Chamfer",
        "device": device_name(torch.device("cpu")),
        "command": "uv run --group peers python benchmarks/perf/muvera_vs_muvera_python.py " + shlex.join(sys.argv[1:]),
        "columns": list(rows[0]),
        "rows": rows,
        "notes": (
            f"Encoding: {args.documents} documents of {args.document_lengths[0]}-{args.document_lengths[1]} and "
            f"{args.queries} queries of {args.query_length} random unit vectors in {args.dim} dimensions, the same "
            f"list of arrays for both; medians of {args.rounds} interleaved rounds; ratio = muvera-python time / ours "
            "(> 1: ours is faster). Bit equality is not expected (different random generators); "
            "tests/test_muvera_peers.py shows equal FDEs given the same random matrices. " + search_note
        ),
    }
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(result["notes"])
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
