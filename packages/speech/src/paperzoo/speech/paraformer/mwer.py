"""Minimum word error rate (MWER) training for the single-step NAR decoder, with negative samples drawn from its
output distributions.

"Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition", Gao et
al., Interspeech 2022 (https://arxiv.org/abs/2206.08317), Section 2.4; the loss is Prabhavalkar et al., "Minimum Word
Error Rate Training for Attention-based Sequence-to-Sequence Models" (https://arxiv.org/abs/1712.01818):

    L_MWER = sum_i P^(y_i | x) (W(y_i, y*) - W_mean),   P^(y_i | x) = P(y_i | x) / sum_j P(y_j | x)

over an N-best list {y_i}, W the number of errors against the reference y* and W_mean their mean over the list.
An AR model gets its N-best from beam search; the NAR decoder has none, so Paraformer draws negative candidates from
its per-token output distributions: the tokens are independent given the acoustic embeddings, so a candidate is one
token sampled per position. Ours: the greedy (argmax) hypothesis plus `num_candidates - 1` sampled ones; duplicates
are masked out of the renormalisation and of W_mean, so each distinct hypothesis counts once.

Deviations: W is the token edit distance (character errors for a character vocabulary; word errors in the MWER
paper); candidates are drawn by ancestral sampling of every position (the paper's text does not fix the sampler;
TeaPoly's CE-OptimizedLoss, for instance, masks the top-1 token at random positions instead).
"""

from collections.abc import Sequence

import torch

from paperzoo.core.errors import require


def edit_distance(hypothesis: Sequence[int], reference: Sequence[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions, each 1) between two token sequences."""
    previous = list(range(len(reference) + 1))
    for i, token in enumerate(hypothesis, start=1):
        current = [i]
        for j, ref in enumerate(reference, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != ref)))
        previous = current
    return previous[-1]


def sample_candidates(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    num_candidates: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy hypothesis plus `num_candidates - 1` drawn token by token from the NAR output distributions.

    Args:
        log_probs: [B, N, V] the decoder's log-probabilities.
        lengths: [B] tokens per utterance.
        num_candidates: K >= 1.
        generator: the random source (None: torch's global one).

    Returns:
        candidates [B, K, N] long (0 past lengths[b]; candidate 0 is the greedy one) and distinct [B, K] bool (False
        for a repeat of an earlier candidate of the same utterance).
    """
    require(num_candidates >= 1, f"MWER needs at least one candidate, got {num_candidates}")
    batch, length, vocab = log_probs.shape
    with torch.no_grad():
        probs = log_probs.detach().float().exp().reshape(batch * length, vocab).cpu()
        sampled = torch.multinomial(probs, num_candidates - 1, replacement=True, generator=generator)
        sampled = sampled.reshape(batch, length, num_candidates - 1).permute(0, 2, 1).to(log_probs.device)
        greedy = log_probs.argmax(-1)[:, None, :]  # [B, 1, N]
        candidates = torch.cat([greedy, sampled], dim=1)  # [B, K, N]
        valid = torch.arange(length, device=log_probs.device)[None, None, :] < lengths[:, None, None]
        candidates = candidates.masked_fill(~valid, 0)
        same = (candidates[:, :, None, :] == candidates[:, None, :, :]).all(-1)  # [B, K, K]
        earlier = torch.ones(num_candidates, num_candidates, dtype=torch.bool, device=log_probs.device).tril(-1)
        distinct = ~(same & earlier).any(-1)  # [B, K]
    return candidates, distinct


def mwer_loss(
    log_probs: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    lengths: torch.Tensor,
    distinct: torch.Tensor | None = None,
) -> torch.Tensor:
    """The MWER loss over an N-best list, averaged over the utterances.

    Args:
        log_probs: [B, N, V] the decoder's log-probabilities (the gradient flows here).
        candidates: [B, K, N] the N-best hypotheses (positions past lengths[b] ignored).
        targets: [B, N] the reference tokens.
        lengths: [B] tokens per utterance (hypotheses and reference alike: the NAR decoder emits N tokens in training).
        distinct: [B, K] which candidates count (default all).

    Returns:
        scalar: mean over b of sum_i P^(y_i) (W_i - W_mean).
    """
    batch, count, length = candidates.shape
    if distinct is None:
        distinct = torch.ones(batch, count, dtype=torch.bool, device=candidates.device)
    valid = torch.arange(length, device=log_probs.device)[None, None, :] < lengths[:, None, None]  # [B, 1, N]
    token_log_probs = log_probs[:, None].expand(batch, count, length, -1).gather(-1, candidates[..., None])[..., 0]
    sequence_log_probs = (token_log_probs * valid).sum(-1)  # [B, K] log P(y_i | x)
    sequence_log_probs = sequence_log_probs.masked_fill(~distinct, -torch.inf)
    renormalised = sequence_log_probs.softmax(dim=1)  # [B, K] P^
    errors = torch.tensor(
        [
            [
                edit_distance(candidates[b, i, : lengths[b]].tolist(), targets[b, : lengths[b]].tolist())
                for i in range(count)
            ]
            for b in range(batch)
        ],
        dtype=log_probs.dtype,
        device=log_probs.device,
    )  # [B, K] W(y_i, y*)
    mean_errors = (errors * distinct).sum(1, keepdim=True) / distinct.sum(1, keepdim=True)
    return (renormalised * (errors - mean_errors) * distinct).sum(1).mean()
