"""Linear attention as a `TokenMixer`: the kernelised transformer of "Transformers are RNNs".

"Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention" (Katharopoulos, Vyas, Pappas,
Fleuret; arXiv:2006.16236, https://arxiv.org/abs/2006.16236). Softmax similarity is replaced by a feature map
phi(x) = elu(x) + 1 > 0, so per head

    y_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),
    S_i = sum_{j in N(i)} phi(k_j) v_j^T,  z_i = sum_{j in N(i)} phi(k_j),

where N(i) = {j <= i} (causal) or every position (bidirectional). The bidirectional layer costs O(L Dh^2) by
computing S once. The causal one is computed in chunks of `chunk_size`: exact masked products inside a chunk, and
the prefix state S, z of the earlier chunks (an exclusive cumulative sum over chunk summaries) for the rest, so
memory grows as L / chunk * Dh^2 instead of L * Dh^2 for a plain cumulative sum. The causal layer is an RNN: `step`
carries (S, z) and costs O(Dh^2) per token whatever the context.

Unified view (arXiv:2302.06218): M[i, j] = phi(q_i)^T phi(k_j) / (phi(q_i)^T z_i + eps) per head, masked to j <= i
when causal: input-dependent like softmax attention, but of rank <= Dh (a product of two L x Dh factors scaled per
row), which is what makes the recurrence finite.

Options beyond the paper: `rotary=True` applies RoPE to phi(q), phi(k) in the numerator only and keeps the
denominator un-rotated (RoFormer's recipe for linear attention, arXiv:2104.09864 section 3.3), so the layer sees
positions without a positional embedding in the backbone. The paper itself uses no rotation (the default). The
reference implementation (idiap/fast-transformers) adds eps = 1e-6 to the denominator, as here.
"""

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.layers import RotaryEmbedding
from paperzoo.efficiency.sequence.mixer import TokenMixer, register_mixer


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, positive everywhere (the paper's eq. 7)."""
    return F.elu(x) + 1.0


def causal_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_num: torch.Tensor | None = None,
    k_num: torch.Tensor | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Chunked causal linear attention on feature-mapped queries and keys.

    Args:
        q, k: phi(Q), phi(K) [B, H, L, Dh] (positive), used in the denominator (and the numerator by default).
        v: values [B, H, L, Dv].
        q_num, k_num: the numerator's queries and keys when they differ (rotated ones), [B, H, L, Dh].
        chunk_size: positions per chunk.
        eps: added to the denominator.

    Returns:
        [B, H, L, Dv].
    """
    q_num = q if q_num is None else q_num
    k_num = k if k_num is None else k_num
    length = q.shape[2]
    pad = (-length) % chunk_size
    if pad:  # zero keys and values add nothing; the padded queries' outputs are cut off below
        q, k, v, q_num, k_num = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v, q_num, k_num))
    batch, heads, padded, dh = q.shape
    n = padded // chunk_size
    q, k, v, q_num, k_num = (t.reshape(batch, heads, n, chunk_size, t.shape[-1]) for t in (q, k, v, q_num, k_num))
    # Prefix state of the chunks before each chunk (exclusive cumulative sums of the chunk summaries).
    kv = torch.einsum("bhncd,bhnce->bhnde", k_num, v)  # [B, H, n, Dh, Dv]
    s_prev = kv.cumsum(2) - kv
    z = k.sum(3)  # [B, H, n, Dh]
    z_prev = z.cumsum(2) - z
    mask = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    scores = (q_num @ k_num.transpose(-1, -2)).masked_fill(~mask, 0.0)  # [B, H, n, C, C]
    numerator = scores @ v + q_num @ s_prev  # [B, H, n, C, Dv]
    denominator = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0).sum(-1) + (q * z_prev[:, :, :, None]).sum(-1)
    y = numerator / (denominator[..., None] + eps)
    return y.reshape(batch, heads, padded, -1)[:, :, :length]


@register_mixer("linear_attention")
class LinearAttentionMixer(TokenMixer):
    """Multi-head linear attention with phi = elu + 1 (Katharopoulos et al., 2020).

    Args:
        dim: D.
        n_heads: H; D must divide by it.
        causal: position i attends to j <= i only (and the layer has a recurrent step mode).
        chunk_size: positions per chunk of the causal computation (memory vs. parallelism; no effect on results).
        eps: added to the normaliser.
        rotary: RoPE on the numerator's phi(q), phi(k) (RoFormer's linear-attention variant); off in the paper.
        max_seq_len: longest sequence the rotary cache covers.

    Shapes: x [B, L, D] -> [B, L, D]; C = D in the materialised view.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int = 4,
        causal: bool = True,
        chunk_size: int = 64,
        eps: float = 1e-6,
        rotary: bool = False,
        max_seq_len: int = 16384,
    ):
        super().__init__()
        require(n_heads > 0 and dim % n_heads == 0, f"linear attention width {dim} must divide into {n_heads} heads")
        require(chunk_size > 0, f"chunk_size must be > 0, got {chunk_size}")
        require(eps >= 0, f"eps must be >= 0, got {eps}")
        self.n_heads, self.head_dim, self.causal = n_heads, dim // n_heads, causal
        require(not rotary or self.head_dim % 2 == 0, f"rotary needs an even head width, got {self.head_dim}")
        self.chunk_size, self.eps = chunk_size, eps
        self.supports_step = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, max_seq_len) if rotary else None

    def _heads(self, x: torch.Tensor, offset: int = 0):
        """x: [B, L, D] -> phi(q), phi(k), the numerator's (rotated) phi(q), phi(k), and v: [B, H, L, Dh]."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = elu_feature_map(q), elu_feature_map(k)
        if self.rotary is None:
            return q, k, q, k, v
        return q, k, self.rotary(q, offset), self.rotary(k, offset), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, q_num, k_num, v = self._heads(x)
        if self.causal:
            y = causal_linear_attention(q, k, v, q_num, k_num, self.chunk_size, self.eps)
        else:
            state = k_num.transpose(-1, -2) @ v  # [B, H, Dh, Dh]
            denominator = q @ k.sum(2, keepdim=True).transpose(-1, -2)  # [B, H, L, 1]
            y = (q_num @ state) / (denominator + self.eps)
        return self.out(y.transpose(1, 2).flatten(2))

    # --- the materialised view ----------------------------------------------------------------------------------
    def values(self, x: torch.Tensor) -> torch.Tensor:
        return self._heads(x)[4].transpose(1, 2).flatten(2)  # [B, L, H*Dh]

    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        q, k, q_num, k_num, _ = self._heads(x)
        numerator = q_num @ k_num.transpose(-1, -2)  # [B, H, L, L]
        similarity = q @ k.transpose(-1, -2)  # the un-rotated similarities the normaliser sums
        if self.causal:
            future = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
            numerator, similarity = numerator.masked_fill(future, 0.0), similarity.masked_fill(future, 0.0)
        weights = numerator / (similarity.sum(-1, keepdim=True) + self.eps)
        return weights.repeat_interleave(self.head_dim, dim=1)  # [B, D, L, L]: channel c belongs to head c // Dh

    def readout(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        return self.out(mixed)

    # --- step mode: the RNN of the paper's section 3.4 ------------------------------------------------------------
    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        """S [B, H, Dh, Dh], z [B, H, Dh] (zero) and the position (for the rotation)."""
        s = torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device, dtype=dtype)
        z = torch.zeros(batch_size, self.n_heads, self.head_dim, device=device, dtype=dtype)
        return {"s": s, "z": z, "position": 0}

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """x: [B, D] -> [B, D]; S += phi(k) v^T, z += phi(k), y = phi(q)^T S / (phi(q)^T z + eps): O(Dh^2) per token."""
        require(self.causal, "a bidirectional linear attention mixer has no step mode")
        q, k, q_num, k_num, v = (t[:, :, 0] for t in self._heads(x[:, None], offset=state["position"]))  # [B, H, Dh]
        s = state["s"] + k_num[..., :, None] * v[..., None, :]
        z = state["z"] + k
        y = torch.einsum("bhd,bhde->bhe", q_num, s) / ((q * z).sum(-1, keepdim=True) + self.eps)
        return self.out(y.flatten(1)), {"s": s, "z": z, "position": state["position"] + 1}
