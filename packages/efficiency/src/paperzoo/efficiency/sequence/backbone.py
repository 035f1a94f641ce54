"""`SequenceModel`: token embedding, a stack of pre-norm residual blocks around any `TokenMixer`, a final norm.

Every long-sequence comparison in this family (S4, S4D, SGConv, Mamba against attention; LRA; self-pretraining)
trains this one backbone with a different `mixer`, so that "same size, same budget" means the same blocks, norms,
MLPs and heads, and only the token mixing differs. Mamba's own architecture has no MLP (`mlp_ratio=0`).
"""

from typing import Any

import torch
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.layers import SwiGLU
from paperzoo.efficiency.sequence.mixer import MixerState, TokenMixer, build_mixer


class SequenceBlock(nn.Module):
    """x + Dropout(Mixer(Norm(x))), then x + Dropout(SwiGLU(Norm(x))) when `mlp_ratio > 0`. x: [B, L, D]."""

    def __init__(self, dim: int, mixer: TokenMixer, mlp_ratio: float, dropout: float):
        super().__init__()
        self.mixer_norm = nn.LayerNorm(dim)
        self.mixer = mixer
        self.mlp_norm = nn.LayerNorm(dim) if mlp_ratio > 0 else None
        self.mlp = SwiGLU(dim, max(1, int(mlp_ratio * dim))) if mlp_ratio > 0 else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.mixer_norm(x)))
        if self.mlp is not None and self.mlp_norm is not None:
            x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x

    def step(self, x: torch.Tensor, state: MixerState) -> tuple[torch.Tensor, MixerState]:
        """One position: x [B, D] -> [B, D] through the mixer's recurrent mode."""
        mixed, state = self.mixer.step(self.mixer_norm(x), state)
        x = x + mixed
        if self.mlp is not None and self.mlp_norm is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state


class SequenceModel(nn.Module):
    """Embedding -> `depth` x `SequenceBlock(mixer)` -> LayerNorm. tokens [B, L] int64 -> features [B, L, D].

    Args:
        vocab_size: number of input token ids (0 is padding in the paperzoo sequence datamodules).
        dim: D.
        depth: number of blocks.
        mixer: a registered mixer name (`attention`, `s4`, `s4d`, `mamba`, `sgconv`, ...).
        mixer_args: keyword arguments of that mixer (say `{"n_heads": 4, "causal": false}`).
        mlp_ratio: SwiGLU hidden width / D after each mixer; 0 for mixer-only blocks.
        dropout: residual dropout.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "attention",
        mixer_args: dict[str, Any] | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        require(
            vocab_size > 0 and dim > 0 and depth > 0,
            f"vocab_size, dim and depth must be > 0, got {vocab_size}, {dim}, {depth}",
        )
        require(mlp_ratio >= 0, f"mlp_ratio must be >= 0, got {mlp_ratio}")
        self.embedding = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(
            SequenceBlock(dim, build_mixer(mixer, dim, **(mixer_args or {})), mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def causal(self) -> bool:
        return all(block.mixer.causal for block in self.blocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # [B, L, D]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def initial_state(self, batch_size: int) -> list[MixerState]:
        """One recurrent state per block, for `step`."""
        weight = self.embedding.weight
        return [b.mixer.initial_state(batch_size, weight.device, weight.dtype) for b in self.blocks]

    def step(self, token: torch.Tensor, state: list[MixerState]) -> tuple[torch.Tensor, list[MixerState]]:
        """Recurrent mode: token [B] -> features [B, D] of that position, and the new states."""
        x = self.embedding(token)
        new_state = []
        for block, block_state in zip(self.blocks, state, strict=True):
            x, block_state = block.step(x, block_state)
            new_state.append(block_state)
        return self.norm(x), new_state
