"""The interface every recognizer here implements, so Paraformer, the autoregressive and the CTC baselines
train, decode and are scored by the same task and harness.

Batches are dicts (the datamodules' collate):
    features        [B, T, F] float, padded with 0
    feature_lengths [B] long
    tokens          [B, N] long, padded with `IGNORE_ID`
    token_lengths   [B] long
    audio_seconds   [B] float, the duration of each utterance (for the real-time factor)
"""

import abc

import torch
from torch import nn


class SpeechRecognizer(nn.Module, abc.ABC):
    """An encoder plus a way to train and decode tokens from it."""

    @abc.abstractmethod
    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The training losses: "loss" (what is minimised) plus its named parts (logged as they are)."""

    @abc.abstractmethod
    def decode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        """The recognised token ids of each utterance, without special ids."""


def unpad_tokens(tokens: torch.Tensor, token_lengths: torch.Tensor) -> list[list[int]]:
    """The target ids of each utterance: `tokens` [B, N] cut to `token_lengths` [B]."""
    return [row[:length].tolist() for row, length in zip(tokens, token_lengths.tolist(), strict=True)]
