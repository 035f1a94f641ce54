"""Continuous integrate-and-fire (CIF): Paraformer's predictor of the token count and the acoustic embeddings.

"Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition", Gao,
Zhang, McLoughlin and Yan, Interspeech 2022 (https://arxiv.org/abs/2206.08317), Section 2.2; CIF itself is from
Dong and Xu, "CIF: Continuous Integrate-and-Fire for End-to-End Speech Recognition" (https://arxiv.org/abs/1905.11235).

Implemented:
- `CIFPredictor`: a weight alpha_t in (0, 1) per encoder frame from a 1-d convolution over the frames (left and right
  context `left_order`, `right_order`), ReLU, a linear layer and a sigmoid, as FunASR's `CifPredictorV2`
  (`alpha = relu(sigmoid(.) * smooth_factor - noise_threshold)`, padding frames get 0).
- `cif`: integrate the weights from left to right and fire an acoustic embedding each time the accumulated weight
  reaches the threshold (1.0). The embedding is the alpha-weighted sum of the frames it integrated; the frame on
  which it fires is split, its remaining weight carried over to the next embedding.
- Training: the weights are scaled by N / sum(alpha) so that CIF fires exactly N times (N the target length), and the
  quantity loss |sum(alpha) - N| (on the unscaled weights) teaches the predictor the count (`quantity_loss`).
- Inference: tail handling as FunASR's `tail_process_fn`: one frame of zeros with weight `tail_threshold` (0.45) is
  appended after the last real frame, so a final residual weight of at least 1 - 0.45 still fires a token; the
  count is floor(sum(alpha)).

`cif` is written in closed form instead of FunASR's frame loop: with c_t = alpha_1 + ... + alpha_t (c_0 = 0), token k
(0-based) owns the weight interval [k * beta, (k + 1) * beta) and frame t contributes the overlap of
[c_{t-1}, c_t) with it, so `embeddings = W @ hidden` with W [B, N, T] built in one shot (differentiable in alpha
exactly as the loop is). It equals FunASR's `cif` whenever every alpha_t < 1 (always at inference; H6's peer test
checks it). Deviations: a frame whose weight exceeds the threshold (possible after training-time scaling) fires
several embeddings here, where FunASR's loop fires at most one per frame; a threshold other than 1 carries
`integrate - threshold` over (FunASR subtracts 1, so its frames then do not sum to the threshold).
"""

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from paperzoo.core.errors import require


class Fired(NamedTuple):
    """What `cif` returns.

    embeddings: [B, N, D] the fired acoustic embeddings, zero past each utterance's count (N = the largest count).
    lengths: [B] long, the number of embeddings fired per utterance.
    integrate: [B, T] the accumulated weight at each frame after adding its alpha, before firing resets it (FunASR's
        `fires`; a value >= threshold marks a frame that fires).
    """

    embeddings: torch.Tensor
    lengths: torch.Tensor
    integrate: torch.Tensor


def cif(
    hidden: torch.Tensor,
    alphas: torch.Tensor,
    threshold: float = 1.0,
    num_tokens: torch.Tensor | None = None,
) -> Fired:
    """Integrate `alphas` over the frames of `hidden` and fire an embedding each time the sum crosses `threshold`.

    Args:
        hidden: [B, T, D] encoder frames.
        alphas: [B, T] non-negative weights (0 on padding frames).
        threshold: beta, the weight of one token.
        num_tokens: [B] how many embeddings to emit per utterance (training: the target lengths, for weights that
            were scaled to sum to N * beta; the last one may then fall a rounding error short of the threshold).
            None: every full threshold fires, floor(sum(alpha) / beta) embeddings.

    Returns:
        `Fired` (embeddings [B, N, D], lengths [B], integrate [B, T]).
    """
    require(threshold > 0, f"CIF threshold must be > 0, got {threshold}")
    batch, frames, _ = hidden.shape
    # The prefix sums in float64: a float32 cumsum over hundreds of frames drifts enough to move a firing frame.
    cumulative = torch.cumsum(alphas.double(), dim=1)  # [B, T] c_t
    previous = F.pad(cumulative[:, :-1], (1, 0))  # [B, T] c_{t-1}
    if num_tokens is None:
        lengths = torch.floor(cumulative[:, -1] / threshold + 1e-9).long() if frames else hidden.new_zeros(batch)
    else:
        lengths = num_tokens.long()
    lengths = lengths.to(hidden.device).long()
    count = int(lengths.max()) if batch else 0
    fired_before = torch.floor(previous / threshold + 1e-9)
    integrate = (cumulative - fired_before * threshold).to(alphas.dtype)  # [B, T]
    # W[b, k, t] = |[c_{t-1}, c_t) ∩ [k beta, (k+1) beta)|: the share of frame t's weight that goes to token k. The
    # float64 prefix sums are re-derived from `alphas` so the gradient reaches them.
    cumulative_grad = torch.cumsum(alphas, dim=1)  # [B, T]
    previous_grad = F.pad(cumulative_grad[:, :-1], (1, 0))
    lower = torch.arange(count, device=hidden.device, dtype=alphas.dtype)[None, :, None] * threshold  # [1, N, 1]
    upper = lower + threshold
    overlap = torch.minimum(cumulative_grad[:, None, :], upper) - torch.maximum(previous_grad[:, None, :], lower)
    weights = overlap.clamp(min=0)  # [B, N, T]
    if num_tokens is not None:
        # The last token of a scaled utterance takes whatever the frames hold past (N - 1) * beta, so a sum that ends a
        # rounding error below N * beta still gives it (almost exactly) the full threshold.
        last = (lengths - 1).clamp(min=0)
        tail = (cumulative_grad[:, None, :] - torch.maximum(previous_grad[:, None, :], lower)).clamp(min=0)
        is_last = torch.arange(count, device=hidden.device)[None, :, None] == last[:, None, None]
        weights = torch.where(is_last, tail, weights)
    valid = torch.arange(count, device=hidden.device)[None, :] < lengths[:, None]  # [B, N]
    weights = weights * valid[:, :, None]
    embeddings = torch.bmm(weights.to(hidden.dtype), hidden)  # [B, N, D]
    return Fired(embeddings, lengths, integrate)


def quantity_loss(quantity: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """The quantity (MAE) loss |sum_t alpha_t - N| averaged over the utterances: `quantity`, `target_lengths` [B]."""
    return (quantity - target_lengths.to(quantity.dtype)).abs().mean()


def add_tail(
    hidden: torch.Tensor, alphas: torch.Tensor, lengths: torch.Tensor, tail_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one zero frame of weight `tail_threshold` after each utterance's last frame (inference tail handling).

    Args:
        hidden: [B, T, D]; alphas: [B, T] (0 on padding); lengths: [B] valid frames.

    Returns:
        hidden [B, T + 1, D] (the new frame is zeros) and alphas [B, T + 1] with `tail_threshold` at index lengths[b].
    """
    hidden = F.pad(hidden, (0, 0, 0, 1))  # [B, T + 1, D]
    alphas = F.pad(alphas, (0, 1))  # [B, T + 1]
    tail = F.one_hot(lengths.long(), alphas.shape[1]).to(alphas.dtype) * tail_threshold
    return hidden, alphas + tail


class CIFOutput(NamedTuple):
    """What `CIFPredictor` returns.

    embeddings: [B, N, D] the acoustic embeddings E_a (zero past each utterance's count).
    lengths: [B] long, N per utterance (the target lengths in training, the predicted count at inference).
    alphas: [B, T] the weights CIF integrated (scaled to the target length in training; without the tail frame).
    quantity: [B] sum_t alpha_t of the unscaled weights, the predicted count the quantity loss trains.
    """

    embeddings: torch.Tensor
    lengths: torch.Tensor
    alphas: torch.Tensor
    quantity: torch.Tensor


class CIFPredictor(nn.Module):
    """Per-frame weights from a convolution + FFN and a sigmoid, integrated and fired by `cif`.

    Args:
        dim: D, the encoder width (the acoustic embeddings have it too).
        left_order, right_order: frames of context left and right of each frame in the convolution (FunASR: 1, 1).
        threshold: beta, the firing threshold (1.0).
        tail_threshold: the weight of the zero frame appended at inference (FunASR's Paraformer: 0.45); 0 disables it.
        smooth_factor, noise_threshold: alpha = relu(sigmoid(.) * smooth_factor - noise_threshold) (FunASR: 1, 0).

    Shapes: hidden [B, T, D], lengths [B] -> `CIFOutput`.
    """

    def __init__(
        self,
        dim: int,
        left_order: int = 1,
        right_order: int = 1,
        threshold: float = 1.0,
        tail_threshold: float = 0.45,
        smooth_factor: float = 1.0,
        noise_threshold: float = 0.0,
    ):
        super().__init__()
        require(left_order >= 0 and right_order >= 0, f"CIF conv orders must be >= 0, got {left_order}, {right_order}")
        require(0.0 <= tail_threshold < threshold, f"tail_threshold must be in [0, threshold), got {tail_threshold}")
        self.left_order, self.right_order = left_order, right_order
        self.conv = nn.Conv1d(dim, dim, left_order + right_order + 1)
        self.output = nn.Linear(dim, 1)
        self.threshold = threshold
        self.tail_threshold = tail_threshold
        self.smooth_factor = smooth_factor
        self.noise_threshold = noise_threshold

    def weights(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """alpha [B, T] in [0, 1), zero on padding frames."""
        context = F.pad(hidden.transpose(1, 2), (self.left_order, self.right_order))  # [B, D, T + l + r]
        projected = torch.relu(self.conv(context)).transpose(1, 2)  # [B, T, D]
        alphas = torch.sigmoid(self.output(projected).squeeze(-1))  # [B, T]
        alphas = torch.relu(alphas * self.smooth_factor - self.noise_threshold)
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return alphas * valid

    def forward(
        self, hidden: torch.Tensor, lengths: torch.Tensor, target_lengths: torch.Tensor | None = None
    ) -> CIFOutput:
        alphas = self.weights(hidden, lengths)  # [B, T]
        quantity = alphas.sum(dim=1)  # [B]
        if target_lengths is not None:
            # Scale so that CIF fires exactly N times (N = target length); the gradient flows through the scale too.
            target = target_lengths.to(alphas.dtype) * self.threshold
            alphas = alphas * (target / quantity.clamp(min=1e-6))[:, None]
            fired = cif(hidden, alphas, self.threshold, num_tokens=target_lengths)
        else:
            tail_hidden, tail_alphas = hidden, alphas
            if self.tail_threshold > 0:
                tail_hidden, tail_alphas = add_tail(hidden, alphas, lengths, self.tail_threshold)
            fired = cif(tail_hidden, tail_alphas, self.threshold)
        return CIFOutput(fired.embeddings, fired.lengths, alphas, quantity)
