"""Retrieval data: the `RetrievalBenchmark` record, offline benchmarks, the BEIR loader and datamodules."""

from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark
from paperzoo.retrieval.data.module import RetrievalDataModule
from paperzoo.retrieval.data.wikipedia import wikipedia_passages

__all__ = ["BenchmarkSplits", "RetrievalBenchmark", "RetrievalDataModule", "wikipedia_passages"]
