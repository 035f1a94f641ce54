"""The Matryoshka loss and the sentence encoder it trains.

Paper: Matryoshka Representation Learning, Kusupati et al., NeurIPS 2022, https://arxiv.org/abs/2205.13147.

MRL trains one d-dimensional embedding z so that every nested prefix z[:m], m in a set M of dimensions
(the paper uses M = {8, 16, ..., d}, halving), is a good representation on its own: the objective is
sum_{m in M} c_m * L(z[:m]) with the task loss L applied to each prefix (paper eq. 1, c_m = 1 there).

Here L is the in-batch contrastive loss of sentence-transformers' MultipleNegativesRankingLoss on cosine
similarities (`paperzoo.retrieval.losses`), so each prefix is L2-normalised again before scoring, exactly as
sentence-transformers' `MatryoshkaLoss` does.

Deviations from the paper:
- The paper's losses are softmax cross-entropy over classes with a separate linear head per prefix (or, in MRL-E,
  the slices W[:m] of one shared head). Retrieval by embedding similarity needs no head: the prefix itself is
  scored, as in the paper's retrieval experiments and in sentence-transformers. MRL-E is therefore not built.
- Dimensions here default to 384/192/96/48/24 for MiniLM's 384-d embedding (the paper halves down to 8).
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.encoder import MiniLMEncoder, mean_pool
from paperzoo.retrieval.losses import cosine_scores, in_batch_contrastive

#: MiniLM's nested dimensions: full, then halving down to a sixteenth.
DEFAULT_DIMS = (384, 192, 96, 48, 24)


def validate_dims(dims: Sequence[int], embedding_dim: int) -> tuple[int, ...]:
    """`dims` as a tuple after checking they are positive, strictly descending and at most `embedding_dim`."""
    dims = tuple(int(m) for m in dims)
    if not dims:
        raise ConfigError("dims must name at least one embedding dimension, got an empty list")
    if any(m <= 0 for m in dims):
        raise ConfigError(f"dims must be positive, got {list(dims)}")
    if any(m > embedding_dim for m in dims):
        raise ConfigError(f"dims {list(dims)} exceed the embedding size {embedding_dim}")
    if any(a <= b for a, b in zip(dims, dims[1:], strict=False)):
        raise ConfigError(f"dims must be strictly descending (e.g. 384, 192, 96), got {list(dims)}")
    return dims


def validate_weights(weights: Sequence[float] | None, dims: Sequence[int]) -> tuple[float, ...]:
    """One non-negative weight c_m per dimension (all 1 when None, as in the paper), not all zero."""
    if weights is None:
        return (1.0,) * len(dims)
    weights = tuple(float(c) for c in weights)
    if len(weights) != len(dims):
        raise ConfigError(f"weights {list(weights)} must have one entry per dimension of {list(dims)}")
    if any(c < 0 for c in weights) or not any(c > 0 for c in weights):
        raise ConfigError(f"weights must be non-negative and not all zero, got {list(weights)}")
    return weights


def matryoshka_losses(
    query_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    dims: Sequence[int],
    inner: Callable[[torch.Tensor], torch.Tensor] = in_batch_contrastive,
    scale: float = 20.0,
) -> torch.Tensor:
    """The inner loss of every nested prefix, unweighted.

    Args:
        query_emb: [B, D] query embeddings (any norm; each prefix is normalised for cosine).
        doc_emb: [B', D] document embeddings, B' >= B; row i is query i's positive, extra rows are negatives.
        dims: nested prefix lengths m, strictly descending, each <= D.
        inner: loss of a scaled score matrix [B, B'] (default: in-batch contrastive, positives on the diagonal).
        scale: the cosine scale (sentence-transformers' MultipleNegativesRankingLoss uses 20).

    Returns:
        [len(dims)] loss per prefix, in the order of `dims`.
    """
    dims = validate_dims(dims, query_emb.shape[-1])
    if doc_emb.shape[-1] != query_emb.shape[-1]:
        raise ConfigError(f"query ({query_emb.shape[-1]}) and document ({doc_emb.shape[-1]}) embedding sizes differ")
    return torch.stack([inner(cosine_scores(query_emb[:, :m], doc_emb[:, :m], scale)) for m in dims])


def matryoshka_loss(
    query_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    dims: Sequence[int] = DEFAULT_DIMS,
    weights: Sequence[float] | None = None,
    inner: Callable[[torch.Tensor], torch.Tensor] = in_batch_contrastive,
    scale: float = 20.0,
) -> torch.Tensor:
    """MRL's objective sum_m c_m * inner(scale * cos(q[:m], d[:m])) (paper eq. 1) over the prefixes `dims`.

    Args: see `matryoshka_losses`; `weights` are the c_m (default 1 each). Returns a scalar.
    """
    weights = validate_weights(weights, dims)
    losses = matryoshka_losses(query_emb, doc_emb, dims, inner, scale)  # [M]
    return (losses * losses.new_tensor(weights)).sum()


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2 as a sentence encoder: token states, masked mean pooling and an optional linear projection.

    Embeddings are returned unnormalised; scoring normalises them (per prefix for MRL). Without a projection the
    normalised output equals sentence-transformers' all-MiniLM-L6-v2 embedding.

    Args:
        trainable_layers, pretrained, num_layers: see `MiniLMEncoder`.
        projection_dim: if set, a bias-free linear map 384 -> projection_dim (initialised as the identity on the
            first min(384, projection_dim) coordinates, so training starts from MiniLM's embedding).

    Shapes:
        forward: input_ids, attention_mask [B, L] -> [B, dim].
        from_prefix: hidden [B, L, 384] (`MiniLMEncoder.prefix` or a `PrefixCache` batch), mask [B, L] -> [B, dim].
    """

    def __init__(
        self,
        trainable_layers: int = 2,
        pretrained: bool = True,
        num_layers: int = 6,
        projection_dim: int | None = None,
    ):
        super().__init__()
        if projection_dim is not None and projection_dim <= 0:
            raise ConfigError(f"projection_dim must be positive or None, got {projection_dim}")
        self.backbone = MiniLMEncoder(trainable_layers=trainable_layers, pretrained=pretrained, num_layers=num_layers)
        self.projection: nn.Linear | None = None
        if projection_dim is not None:
            self.projection = nn.Linear(self.backbone.dim, projection_dim, bias=False)
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(projection_dim, self.backbone.dim))
        self.dim = projection_dim or self.backbone.dim

    def pool(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = mean_pool(tokens, attention_mask)  # [B, 384]
        return pooled if self.projection is None else self.projection(pooled)

    def from_prefix(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone.suffix(hidden, attention_mask), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(input_ids, attention_mask), attention_mask)
