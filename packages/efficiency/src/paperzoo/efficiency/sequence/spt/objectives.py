"""The denoising objectives of self-pretraining (SPT), on a task's own input tokens (never its labels).

"Never Train from Scratch: Fair Comparison of Long-Sequence Models Requires Data-Driven Priors" (Amos, Berant and
Gupta, ICLR 2024, https://arxiv.org/abs/2310.02980), section 2: a model is first pretrained on the downstream task's
training inputs with a standard denoising objective, chosen by the model's causality:

- masked-token prediction for bidirectional models (`mask_tokens`): every real position is masked independently
  with probability `rate`; a masked position's input becomes the dedicated mask token, and the loss is the
  cross-entropy at the masked positions only. This is the authors' `MaskedSequenceDatasetWrapper.mask`
  (Bernoulli(`mlm_prob`) per token, input replaced by `<mask>`, targets -100 elsewhere); their LRA configs and
  README use a 50% masking rate, our default. Unlike BERT there is no 80/10/10 split: every masked input is the
  mask token, as in the reference.
- causal next-token prediction for causal models (`causal_targets`): the target of position i is token i + 1, and
  the last position has none (the reference pads the shifted sequence with -100).

Deviation: padding (token id 0 in the paperzoo sequence datamodules) is never masked and never a target; the
reference masks the raw, unpadded sequences, so this is the same objective on batched data.

Shapes: tokens [B, L] int64 (or any [..., L]); targets have the same shape, `IGNORE_INDEX` where nothing is predicted.
"""

from typing import Literal

import torch
import torch.nn.functional as F

from paperzoo.core.errors import require
from paperzoo.efficiency.sequence.lra.base import PAD
from paperzoo.efficiency.sequence.task import IGNORE_INDEX

Objective = Literal["masked", "causal"]
OBJECTIVES: tuple[Objective, ...] = ("masked", "causal")

#: the authors' masking rate in their LRA pretraining configs (`mlm_prob: 0.5`).
DEFAULT_MASK_RATE = 0.5


def mask_tokens(
    tokens: torch.Tensor,
    mask_token: int,
    rate: float = DEFAULT_MASK_RATE,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked denoising: hide a random `rate` of the real tokens and ask for them back.

    Args:
        tokens: [..., L] int64, `PAD` (0) for padding.
        mask_token: the input id that replaces a masked token (outside the real ids: the pretraining model has one
            embedding row more than the data's vocabulary).
        rate: probability that a real (non-padding) position is masked, independently per position.
        generator: the random source (None: torch's global one).

    Returns:
        inputs: tokens with every masked position set to `mask_token`. [..., L]
        targets: the original token at masked positions, `IGNORE_INDEX` everywhere else (padding included). [..., L]
        masked: which positions were masked. [..., L] bool
    """
    require(0.0 < rate < 1.0, f"mask rate must be in (0, 1), got {rate}")
    draws = torch.rand(tokens.shape, generator=generator, device=tokens.device if generator is None else "cpu")
    masked = (draws.to(tokens.device) < rate) & (tokens != PAD)
    inputs = tokens.masked_fill(masked, mask_token)
    targets = tokens.masked_fill(~masked, IGNORE_INDEX)
    return inputs, targets, masked


def causal_targets(tokens: torch.Tensor) -> torch.Tensor:
    """Next-token targets: targets[..., i] = tokens[..., i + 1]; the last position and padding targets are ignored.

    tokens [..., L] int64 -> targets [..., L] int64 (`IGNORE_INDEX` where nothing is predicted).
    """
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[..., :-1] = tokens[..., 1:]
    return targets.masked_fill(targets == PAD, IGNORE_INDEX)


def denoising_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions that have a target. logits [..., L, V], targets [..., L].

    A batch without any target (all padding, or no position drawn for masking) gives a zero loss that still
    depends on the logits, instead of cross-entropy's NaN.
    """
    scored = targets != IGNORE_INDEX
    if not bool(scored.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[scored], targets[scored])


def content_seed(tokens: torch.Tensor, base: int = 0) -> int:
    """A seed computed from a batch's tokens: validation and test masks are then fixed per batch, so the same
    checkpoint always scores the same (a checkpoint round-trip reproduces `val/loss` exactly)."""
    weights = torch.arange(1, tokens.shape[-1] + 1, device=tokens.device, dtype=torch.int64)
    return (base + int((tokens.reshape(-1, tokens.shape[-1]) * weights).sum()) * 2654435761) % (2**63 - 1)
