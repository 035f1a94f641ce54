"""A small decoder-only language model (GPT with LLaMA's parts), used by many efficiency and retrieval papers.

Token embedding -> n x TransformerBlock (RMSNorm, RoPE attention through SDPA, SwiGLU) -> RMSNorm -> LM head tied
to the embedding. Builders at the bottom span about 100k to 100M parameters with a byte vocabulary.
"""

import torch
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.layers import TransformerBlock


class GPT(nn.Module):
    """Decoder-only LM.

    Args:
        vocab_size: V.
        dim: D, model width.
        n_layers: number of transformer blocks.
        n_heads: attention heads; D must divide by it.
        max_seq_len: longest input the rotary cache covers.
        dropout: attention dropout.

    Shapes:
        forward: tokens [B, T] (int64, T <= max_seq_len) -> logits [B, T, V].
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        max_seq_len: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        require(vocab_size > 0, f"vocab_size must be positive, got {vocab_size}")
        require(dim > 0 and n_layers > 0, f"dim and n_layers must be positive, got {dim} and {n_layers}")
        require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        self.max_seq_len = max_seq_len
        self.embed = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, n_heads, max_seq_len, dropout) for _ in range(n_layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # weight tying, as in GPT-2 and MiniCPM
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat with depth.
        for name, param in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(param, std=0.02 / (2 * n_layers) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        require(
            tokens.shape[-1] <= self.max_seq_len,
            f"sequence length {tokens.shape[-1]} exceeds max_seq_len {self.max_seq_len}",
        )
        x = self.embed(tokens)  # [B, T, D]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # [B, T, V]

    def num_parameters(self) -> int:
        """Parameters counted once (the tied head is not counted twice)."""
        return sum(p.numel() for p in self.parameters())


def gpt_100k(vocab_size: int = 257, max_seq_len: int = 256) -> GPT:
    """About 0.1M parameters: a model for unit tests and tiny configs."""
    return GPT(vocab_size, dim=48, n_layers=3, n_heads=4, max_seq_len=max_seq_len)


def gpt_1m(vocab_size: int = 257, max_seq_len: int = 256) -> GPT:
    """About 1M parameters: CPU claim checks."""
    return GPT(vocab_size, dim=128, n_layers=5, n_heads=4, max_seq_len=max_seq_len)


def gpt_10m(vocab_size: int = 257, max_seq_len: int = 512) -> GPT:
    """About 10M parameters."""
    return GPT(vocab_size, dim=384, n_layers=6, n_heads=6, max_seq_len=max_seq_len)


def gpt_100m(vocab_size: int = 257, max_seq_len: int = 1024) -> GPT:
    """About 100M parameters (GPT-2 small's shape)."""
    return GPT(vocab_size, dim=768, n_layers=14, n_heads=12, max_seq_len=max_seq_len)
