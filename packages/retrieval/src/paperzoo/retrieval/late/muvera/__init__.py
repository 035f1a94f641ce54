"""MUVERA (CATALOG 82): Fixed Dimensional Encodings of multi-vector sets (`fde`) and the FDE-retrieve-then-Chamfer-
rerank pipeline (`pipeline`). "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings",
https://arxiv.org/abs/2405.19504."""

from paperzoo.retrieval.late.muvera.fde import FDEConfig, encode_documents, encode_queries

__all__ = ["FDEConfig", "encode_documents", "encode_queries"]
