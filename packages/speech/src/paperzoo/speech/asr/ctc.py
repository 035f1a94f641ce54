"""The CTC baseline: an encoder, a linear layer to the vocabulary, the CTC loss and greedy decoding.

"Connectionist Temporal Classification: Labelling Unsegmented Sequence Data with Recurrent Neural Networks" (Graves
et al., ICML 2006, https://www.cs.toronto.edu/~graves/icml_2006.pdf); the CTC baseline of Paraformer
(https://arxiv.org/abs/2206.08317) shares Paraformer's encoder. The blank is the shared id 0 (`BLANK_ID`).
The loss is `F.ctc_loss` summed over the batch and divided by the batch size (as FunASR's CTC module);
`zero_infinity` drops utterances with more tokens than frames instead of returning inf.

Shapes: B = batch, T = frames, F = features, D = model width, V = vocabulary, N = tokens.
"""

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.speech.asr.recognizer import SpeechRecognizer
from paperzoo.speech.data.tokenizer import BLANK_ID, SPECIALS


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path decoding: the argmax per frame, repeats merged, blanks and other special ids dropped.

    Args:
        log_probs: [B, T, V] frame scores (any monotone transform of the probabilities).
        lengths: [B] valid frames.
    """
    best = log_probs.argmax(dim=-1)  # [B, T]
    previous = F.pad(best[:, :-1], (1, 0), value=BLANK_ID)
    keep = (best != previous) & (best >= len(SPECIALS))
    keep &= torch.arange(best.shape[1], device=best.device)[None, :] < lengths[:, None]
    return [row[mask].tolist() for row, mask in zip(best, keep, strict=True)]


class CTCHead(nn.Module):
    """Linear(D -> V) and the CTC loss against IGNORE_ID-padded targets."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        require(vocab_size > len(SPECIALS), f"the vocabulary must hold tokens beyond the specials, got {vocab_size}")
        self.projection = nn.Linear(dim, vocab_size)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, D] -> [B, T, V] log-probabilities."""
        return self.projection(hidden).log_softmax(dim=-1)

    def loss(
        self, hidden: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
    ) -> torch.Tensor:
        """The CTC loss of targets `tokens` [B, N] (padding ignored) given `hidden` [B, T, D], per utterance."""
        log_probs = self.log_probs(hidden).float()
        targets = tokens.clamp(min=0)  # the padding (IGNORE_ID) is cut off by token_lengths anyway
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),  # [T, B, V]
            targets,
            lengths,
            token_lengths,
            blank=BLANK_ID,
            reduction="sum",
            zero_infinity=True,
        )
        return loss / hidden.shape[0]


class CTCRecognizer(SpeechRecognizer):
    """An encoder with a CTC head.

    Args:
        encoder: maps (features [B, T, F], lengths [B]) to (hidden [B, T, D], lengths) and has `output_dim` = D
            (see `paperzoo.speech.asr.encoder.build_encoder`).
        vocab_size: V, including the special ids.
    """

    def __init__(self, encoder: nn.Module, vocab_size: int):
        super().__init__()
        self.encoder = encoder
        self.ctc = CTCHead(int(encoder.output_dim), vocab_size)

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        hidden, lengths = self.encoder(features, feature_lengths)
        loss = self.ctc.loss(hidden, lengths, tokens, token_lengths)
        return {"loss": loss, "ctc": loss.detach()}

    @torch.no_grad()
    def decode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        hidden, lengths = self.encoder(features, feature_lengths)
        return ctc_greedy_decode(self.ctc.projection(hidden), lengths)
