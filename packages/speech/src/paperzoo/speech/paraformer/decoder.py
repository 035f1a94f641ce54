"""Paraformer's single-step non-autoregressive decoder.

"Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition", Gao et
al., Interspeech 2022 (https://arxiv.org/abs/2206.08317), Section 2.1: the decoder takes the N acoustic embeddings
from CIF (or, in training, the GLM sampler's mix of acoustic and target-token embeddings) and predicts all N tokens in
one pass, with bidirectional self-attention over the N positions and cross-attention to the encoder output.

The stack is the shared `asr.decoder_layers.TransformerDecoder` with `causal=False` (pre-norm self-attention,
cross-attention, feed-forward, final LayerNorm). `embed` gives the target-token embeddings the GLM sampler glances at
(FunASR's `decoder.embed`), `output` the logits over the vocabulary.

Deviation: FunASR's ParaformerSANMDecoder uses SAN-M layers whose FSMN memory block gives the self-attention a sense
of order; the shared stack has plain attention, so a sinusoidal position encoding is added to the decoder inputs
(without it, glanced token embeddings would reach the decoder as an unordered bag).
"""

import torch
from torch import nn

from paperzoo.speech.asr.decoder_layers import TransformerDecoder
from paperzoo.speech.asr.layers import sinusoidal_encoding


class ParaformerDecoder(nn.Module):
    """Acoustic (or semantic) embeddings [B, N, D] + encoder output [B, T, D] -> logits [B, N, V] in one step.

    Args:
        vocab_size: V.
        d_model: D (the encoder's width: CIF embeddings are encoder frames).
        num_heads, num_layers, ffn_dim, dropout: the decoder stack.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 6,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.stack = TransformerDecoder(d_model, num_heads, num_layers, ffn_dim, dropout, causal=False)
        self.output = nn.Linear(d_model, vocab_size)

    def forward(
        self,
        embeddings: torch.Tensor,
        lengths: torch.Tensor,
        memory: torch.Tensor,
        memory_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """embeddings [B, N, D], lengths [B], memory [B, T, D], memory_lengths [B] -> logits [B, N, V]."""
        if embeddings.shape[1] == 0:
            return embeddings.new_zeros(embeddings.shape[0], 0, self.output.out_features)
        positions = sinusoidal_encoding(embeddings.shape[1], embeddings.shape[2], device=embeddings.device)
        hidden = self.stack(embeddings + positions, memory, memory_lengths, x_lengths=lengths)  # [B, N, D]
        return self.output(hidden)
