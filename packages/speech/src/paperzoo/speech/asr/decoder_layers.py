"""The transformer decoder stack shared by the autoregressive attention baseline and Paraformer's non-autoregressive
decoder: pre-norm blocks of self-attention (causal or not), cross-attention to the encoder output and a
feed-forward, then a final LayerNorm (the layout of FunASR's `DecoderLayer` with `normalize_before=True`; "Attention
Is All You Need", https://arxiv.org/abs/1706.03762).

`causal=True` gives the autoregressive decoder: position i sees tokens <= i; `step` then decodes incrementally with a
cache of self-attention keys/values per layer and the cross-attention keys/values of the encoder output projected
once (`init_state`), so a decoding step costs O(tokens so far), not a full re-run. `causal=False` (Paraformer's NAR
decoder) lets every position see every valid position.

Token embeddings, positions and the output projection are not part of the stack: the AR model embeds tokens,
Paraformer feeds acoustic embeddings from CIF.

Shapes: B = batch, N = decoder positions, T = encoder frames, D = model width, H = heads, Dh = D / H.
"""

from dataclasses import dataclass

import torch
from torch import nn

from paperzoo.core.errors import require
from paperzoo.speech.asr.layers import FeedForward, MultiHeadAttention, attention_mask, lengths_to_mask


@dataclass
class DecoderState:
    """The incremental-decoding cache of a `TransformerDecoder`.

    Attributes:
        memory_kv: per layer, the cross-attention keys and values of the encoder output, each [B, H, T, Dh].
        memory_mask: [B, T] bool, True at valid encoder frames.
        self_kv: per layer, the self-attention keys and values of the positions decoded so far, [B, H, n, Dh].
        length: n, positions decoded so far.
        memory_attention: the cross-attention mask [B, 1, 1, T] (True = attend), None when no frame is padded.
    """

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor
    self_kv: list[tuple[torch.Tensor, torch.Tensor]]
    length: int = 0
    memory_attention: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "DecoderState":
        """The state of rows `index` [B'] (long) of the batch: for beam search's reordering and expansion."""
        return DecoderState(
            memory_kv=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory_kv],
            memory_mask=self.memory_mask.index_select(0, index),
            self_kv=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv],
            length=self.length,
            memory_attention=None if self.memory_attention is None else self.memory_attention.index_select(0, index),
        )


class DecoderLayer(nn.Module):
    """x + Drop(SelfAttn(LN(x))), then x + Drop(CrossAttn(LN(x), memory)), then x + Drop(FFN(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1, attention_dropout: float = 0.0):
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, attention_dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, attention_dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, N, D] attending to itself (after the cached keys/values [B, H, n, Dh], if any) and to the projected
        memory keys/values [B, H, T, Dh] -> (y [B, N, D], the self-attention keys/values [B, H, n + N, Dh])."""
        h = self.self_norm(x)
        keys, values = self.self_attn.project_kv(h)
        if cache is not None:
            keys, values = torch.cat((cache[0], keys), dim=2), torch.cat((cache[1], values), dim=2)
        x = x + self.dropout(self.self_attn.attend(h, keys, values, self_mask))
        x = x + self.dropout(self.cross_attn.attend(self.cross_norm(x), *memory_kv, memory_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x))), (keys, values)


class TransformerDecoder(nn.Module):
    """A stack of `DecoderLayer`s and a final LayerNorm.

    Args:
        d_model: D.
        num_heads: H.
        num_layers: blocks.
        ffn_dim: the feed-forward hidden width.
        dropout: dropout after each sub-block and inside the feed-forward.
        attention_dropout: dropout of attention probabilities.
        causal: mask future positions in self-attention (True for the AR decoder, False for Paraformer's).
    """

    def __init__(
        self,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 6,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        causal: bool = True,
    ):
        super().__init__()
        require(num_layers >= 1, f"the decoder needs at least one layer, got {num_layers}")
        self.d_model = d_model
        self.causal = causal
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, ffn_dim, dropout, attention_dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_lengths: torch.Tensor,
        x_lengths: torch.Tensor | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        """All positions at once (training, or Paraformer's single step).

        Args:
            x: [B, N, D] decoder inputs (embedded tokens or acoustic embeddings).
            memory: [B, T, D] encoder output.
            memory_lengths: [B] valid encoder frames.
            x_lengths: [B] valid decoder positions (padded positions are then hidden as keys); None = all valid.
            causal: overrides the constructor's `causal` for this call.

        Returns:
            [B, N, D] (padded positions carry values that the caller ignores).
        """
        causal = self.causal if causal is None else causal
        key_mask = None if x_lengths is None else lengths_to_mask(x_lengths, x.shape[1])
        self_mask = attention_mask(x.shape[1], key_mask, causal=causal, device=x.device)
        memory_mask = attention_mask(x.shape[1], lengths_to_mask(memory_lengths, memory.shape[1]), causal=False)
        for layer in self.layers:
            x, _ = layer(x, self_mask, layer.cross_attn.project_kv(memory), memory_mask)
        return self.norm(x)

    def init_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> DecoderState:
        """The empty incremental-decoding state for encoder output `memory` [B, T, D] (keys/values projected once)."""
        empty = memory.new_zeros(memory.shape[0], 0, self.d_model)
        memory_mask = lengths_to_mask(memory_lengths, memory.shape[1])
        return DecoderState(
            memory_kv=[layer.cross_attn.project_kv(memory) for layer in self.layers],
            memory_mask=memory_mask,
            self_kv=[layer.self_attn.project_kv(empty) for layer in self.layers],
            memory_attention=None if bool(memory_mask.all()) else attention_mask(1, memory_mask, causal=False),
        )

    def step(self, x: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Decode the next positions `x` [B, k, D] (usually k = 1) given `state` -> ([B, k, D], the new state).

        Causal: equal to `forward` on the concatenated inputs, at the last k positions."""
        new_kv = []
        # one new position sees every cached one: no self-attention mask needed
        causal = x.shape[1] > 1
        self_mask = attention_mask(x.shape[1], None, causal, query_offset=state.length, device=x.device)
        for layer, cache, memory_kv in zip(self.layers, state.self_kv, state.memory_kv, strict=True):
            x, kv = layer(x, self_mask, memory_kv, state.memory_attention, cache)
            new_kv.append(kv)
        state = DecoderState(
            state.memory_kv, state.memory_mask, new_kv, state.length + x.shape[1], state.memory_attention
        )
        return self.norm(x), state
