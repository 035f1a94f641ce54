"""Adaptive retrieval with Matryoshka embeddings: shortlist with a short prefix, rerank with a longer one.

Paper: Matryoshka Representation Learning, Kusupati et al., NeurIPS 2022, https://arxiv.org/abs/2205.13147,
section 5.3 ("Adaptive Retrieval"): retrieve a shortlist of k documents with the low-dimensional prefix z[:Ds],
then rerank the shortlist with the high-dimensional z[:Dr]; "funnel" retrieval repeats this over a cascade of
growing dimensions and shrinking shortlists. Scores are cosine similarities of the re-normalised prefixes.

Deviation: the paper shortlists with an HNSW index; here the shortlist is exact (brute force over the prefix), so
any loss against full-dimension retrieval comes from the prefix, not from the index.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError


def prefix_scores(query_emb: torch.Tensor, doc_emb: torch.Tensor, dim: int) -> torch.Tensor:
    """Cosine similarity of the `dim`-prefixes. query_emb [Q, D], doc_emb [N, D] -> [Q, N]."""
    return F.normalize(query_emb[:, :dim], dim=-1) @ F.normalize(doc_emb[:, :dim], dim=-1).T


def funnel_retrieve(
    query_emb: torch.Tensor, doc_emb: torch.Tensor, dims: Sequence[int], shortlist_sizes: Sequence[int]
) -> torch.Tensor:
    """Funnel retrieval: score every document at dims[0] and keep the top shortlist_sizes[0]; rescore those at
    dims[1] and keep the top shortlist_sizes[1]; ...; the survivors get their score at dims[-1].

    Args:
        query_emb: [Q, D]; doc_emb: [N, D].
        dims: growing prefix lengths, one per stage (len(shortlist_sizes) + 1 of them), each <= D.
        shortlist_sizes: non-increasing shortlist lengths, each in [1, N].

    Returns:
        [Q, N] cosine scores at dims[-1] for each query's final candidates, -inf for every other document.
    """
    dims, sizes = [int(m) for m in dims], [int(k) for k in shortlist_sizes]
    num_docs, width = doc_emb.shape
    if query_emb.shape[-1] != width:
        raise ConfigError(f"query ({query_emb.shape[-1]}) and document ({width}) embedding sizes differ")
    if len(dims) != len(sizes) + 1:
        raise ConfigError(f"funnel dims {dims} need exactly one more entry than shortlist sizes {sizes}")
    if any(m <= 0 or m > width for m in dims) or any(a > b for a, b in zip(dims, dims[1:], strict=False)):
        raise ConfigError(f"funnel dims {dims} must be non-decreasing and within [1, {width}]")
    if any(k < 1 or k > num_docs for k in sizes) or any(a < b for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ConfigError(f"shortlist sizes {sizes} must be non-increasing and within [1, {num_docs}] documents")
    candidates = torch.arange(num_docs, device=doc_emb.device).expand(query_emb.shape[0], num_docs)  # [Q, N]
    scores = prefix_scores(query_emb, doc_emb, dims[0])  # [Q, N]
    for k, m in zip(sizes, dims[1:], strict=True):
        kept = scores.topk(k, dim=1).indices  # [Q, k], positions within `candidates`
        candidates = candidates.gather(1, kept)  # [Q, k] document ids
        queries = F.normalize(query_emb[:, :m], dim=-1)  # [Q, m]
        docs = F.normalize(doc_emb[:, :m], dim=-1)[candidates]  # [Q, k, m]
        scores = torch.einsum("qm,qkm->qk", queries, docs)
    out = torch.full((query_emb.shape[0], num_docs), float("-inf"), dtype=scores.dtype, device=scores.device)
    return out.scatter(1, candidates, scores)


def adaptive_retrieve(
    query_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    shortlist_dim: int,
    shortlist_size: int,
    full_dim: int | None = None,
) -> torch.Tensor:
    """Two-stage adaptive retrieval: the top `shortlist_size` documents by the `shortlist_dim`-prefix, reranked by
    the `full_dim`-prefix (default: the whole embedding).

    Returns:
        [Q, N] cosine scores at `full_dim` on each query's shortlist, -inf outside it. With shortlist_size = N it
        equals `prefix_scores(query_emb, doc_emb, full_dim)`.
    """
    full_dim = doc_emb.shape[-1] if full_dim is None else full_dim
    return funnel_retrieve(query_emb, doc_emb, [shortlist_dim, full_dim], [shortlist_size])


def funnel_cost(num_docs: int, dims: Sequence[int], shortlist_sizes: Sequence[int]) -> int:
    """Multiply-adds per query of `funnel_retrieve`'s scoring: dims[0] * N + sum_i dims[i+1] * shortlist_sizes[i]
    (the paper's dims x candidates; top-k selection and normalisation are not counted). Full-dimension brute
    force is `funnel_cost(N, [D], [])` = D * N."""
    return int(dims[0]) * num_docs + sum(int(m) * int(k) for m, k in zip(dims[1:], shortlist_sizes, strict=True))
