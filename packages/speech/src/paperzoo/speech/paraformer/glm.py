"""The glancing language model (GLM) sampler of Paraformer.

"Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition", Gao et
al., Interspeech 2022 (https://arxiv.org/abs/2206.08317), Section 2.3, after GLAT (Qian et al., "Glancing Transformer
for Non-Autoregressive Neural Machine Translation", https://arxiv.org/abs/2008.07905).

Training runs the NAR decoder twice. The first pass (no gradient) decodes the acoustic embeddings E_a; the Hamming
distance d between its argmax and the target counts the wrong tokens. The sampler then replaces ceil(lambda * d)
acoustic embeddings, at positions drawn uniformly among the utterance's tokens, by the embeddings of the target
tokens there, and the second pass is trained on these semantic embeddings: the better the first pass, the fewer
tokens it glances at. Implemented here: the count (`glancing_count`), the random positions (`glancing_mask`) and the
mix (`glancing_embeddings`); the two passes and the loss live in `model.Paraformer`.

Deviations: FunASR (`Paraformer.sampler`) truncates the count, floor(lambda * d); the paper writes ceil, which we
follow (a single wrong token still glances at one). lambda * d is taken with a 1e-6 slack before the ceiling so that
float products such as 0.1 * 30 = 3.0000000000000004 give 3.
"""

import math

import torch

from paperzoo.core.errors import require


def glancing_count(distances: torch.Tensor, ratio: float, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """ceil(`ratio` * d) per utterance, at most its length: `distances` [B] long, `lengths` [B] -> [B] long."""
    require(0.0 <= ratio <= 1.0, f"GLM sampling ratio lambda must be in [0, 1], got {ratio}")
    counts = torch.ceil(distances.double() * ratio - 1e-6).clamp(min=0).long()
    return counts if lengths is None else torch.minimum(counts, lengths.long())


def hamming_distance(predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Wrong tokens per utterance among the first lengths[b]: `predictions`, `targets` [B, N] -> [B] long."""
    valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
    return ((predictions != targets) & valid).sum(1)


def glancing_mask(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    lengths: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which positions take the target embedding: ceil(ratio * d) of each utterance's tokens, uniformly at random.

    Args:
        predictions: [B, N] the first pass's argmax tokens.
        targets: [B, N] the target tokens (anything past lengths[b] is ignored).
        lengths: [B] target lengths.
        ratio: lambda, the sampling ratio.
        generator: the random source of the positions (None: torch's global one).

    Returns:
        [B, N] bool, True where the acoustic embedding is replaced; exactly `glancing_count` per row.
    """
    counts = glancing_count(hamming_distance(predictions, targets, lengths), ratio, lengths)  # [B]
    valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]  # [B, N]
    scores = torch.rand(targets.shape, generator=generator, device="cpu").to(targets.device)
    scores = scores.masked_fill(~valid, math.inf)  # padding sorts last and is never drawn
    ranks = scores.argsort(dim=1).argsort(dim=1)  # [B, N] rank of each position in a random order
    return ranks < counts[:, None]


def glancing_embeddings(acoustic: torch.Tensor, target_embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The semantic embeddings: `target_embeddings` where `mask` [B, N], else `acoustic` (both [B, N, D])."""
    return torch.where(mask[:, :, None], target_embeddings, acoustic)
