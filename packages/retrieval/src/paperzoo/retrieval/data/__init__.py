"""Retrieval data: the `RetrievalBenchmark` record, offline benchmarks, the BEIR loader and datamodules."""

from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark

__all__ = ["BenchmarkSplits", "RetrievalBenchmark"]
