"""Retrieval data: the `RetrievalBenchmark` record, offline benchmarks, the BEIR loader and datamodules."""

from paperzoo.retrieval.data.beir import load_beir, load_beir_splits, write_beir
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark
from paperzoo.retrieval.data.codesearch import stdlib_code_search
from paperzoo.retrieval.data.module import RetrievalDataModule
from paperzoo.retrieval.data.wikipedia import wikipedia_passages

__all__ = [
    "BenchmarkSplits",
    "RetrievalBenchmark",
    "RetrievalDataModule",
    "load_beir",
    "load_beir_splits",
    "stdlib_code_search",
    "wikipedia_passages",
    "write_beir",
]
