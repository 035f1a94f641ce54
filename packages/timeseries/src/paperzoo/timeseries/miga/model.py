"""MIGA: a mixture of style experts with group aggregation and inner-group attention, and its baselines.

Paper: Zhaojian Yu, Yinghao Wu, Genesis Wang, Heming Weng, "MIGA: Mixture-of-Experts with Group Aggregation for
Stock Market Prediction", arXiv 2410.02241 (https://arxiv.org/abs/2410.02241). No reference code was published.

What is implemented (per stock, all stocks of a day in parallel):

1. a shared encoder (an MLP here; the paper also has Conv and Transformer encoders over a feature history) maps the
   stock's factors x [F] to z [D];
2. a router maps z to one logit per expert, s = W_r z [E];
3. E = G * M experts (G groups of M), each an MLP, give expert representations h_e = f_e(z) [E, D];
4. inner-group attention: the M representations of each group attend to each other (multi-head self-attention
   over the group's experts, with a residual connection and LayerNorm); experts of different groups never see each
   other;
5. every expert reads its prediction off its representation, y_e = w_e . h'_e + b_e;
6. group aggregation: each group keeps its `top_k` highest-scoring experts, the kept logits are softmax-normalised
   together (so p(e) = p(group) p(e | group) with p(group) proportional to the group's kept mass) and the
   prediction is sum_e p(e) y_e.

Baselines, at the same parameter scale:
- `PlainMoE`: the same encoder, experts, heads and router, with global top-k (`num_groups * top_k` experts over all
  E, so as many experts are active as in MIGA) and neither groups nor attention: no expert sees another;
- `SingleModel`: the same encoder and one wide MLP (hidden width = E x the expert width) with one head;
- `MIGA(inner_attention=False)`: the ablation without inner-group attention (group-wise routing kept).

What could not be verified (only the abstract and catalog summary were accessible; no code): the number of groups
and experts, k, whether top-k is taken per group or globally, the exact attention form (heads, residual, norm) and
whether experts are computed densely. Here every expert is computed for every stock (the model is tiny) and routing
only decides the aggregation weights; attention runs over all experts of a group, selected or not. No load-balancing
or auxiliary loss is used: none is mentioned in the parts of the paper we could read.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require


def top_k_weights(logits: torch.Tensor, top_k: int, num_groups: int = 1) -> torch.Tensor:
    """Routing weights: keep the `top_k` largest logits within each of `num_groups` equal, contiguous groups of
    experts, softmax over everything kept, zero elsewhere.

    Args:
        logits: router logits. [..., E]
        top_k: experts kept per group (1 <= top_k <= E / num_groups).
        num_groups: G; 1 is the usual global top-k.

    Returns:
        weights [..., E], non-negative, each row summing to 1, with exactly G * top_k non-zeros (ties aside).
    """
    num_experts = logits.shape[-1]
    require(num_experts % num_groups == 0, f"{num_experts} experts do not split into {num_groups} equal groups")
    per_group = num_experts // num_groups
    require(1 <= top_k <= per_group, f"top_k must be in 1..{per_group} (experts per group), got {top_k}")
    grouped = logits.unflatten(-1, (num_groups, per_group))  # [..., G, M]
    keep = torch.zeros_like(grouped, dtype=torch.bool).scatter(-1, grouped.topk(top_k, dim=-1).indices, True)
    return torch.softmax(logits.masked_fill(~keep.flatten(-2), float("-inf")), dim=-1)


class MLPEncoder(nn.Module):
    """The shared per-stock encoder: `layers` x (Linear, GELU, Dropout). [..., F] -> [..., D]"""

    def __init__(self, num_features: int, hidden: int, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        require(layers >= 1, f"encoder layers must be >= 1, got {layers}")
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(num_features if i == 0 else hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ExpertBank(nn.Module):
    """E two-layer MLP experts D -> H -> D evaluated together (batched weights). [..., D] -> [..., E, D]"""

    def __init__(self, num_experts: int, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.dropout = nn.Dropout(dropout)
        for weight, bias, fan_in in ((self.w1, self.b1, dim), (self.w2, self.b2, hidden)):  # nn.Linear's init
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        num_experts, dim, width = self.w1.shape
        # the first layer of all experts is one matrix product: [..., D] @ [D, E * H]
        first = (z @ self.w1.permute(1, 0, 2).reshape(dim, num_experts * width)).unflatten(-1, (num_experts, width))
        hidden = self.dropout(F.gelu(first + self.b1))  # [..., E, H]
        return torch.einsum("...eh,ehd->...ed", hidden, self.w2) + self.b2  # [..., E, D]


class ExpertHeads(nn.Module):
    """One linear read-out per expert. [..., E, D] -> [..., E]"""

    def __init__(self, num_experts: int, dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_experts, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_experts).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h * self.weight).sum(-1) + self.bias


class InnerGroupAttention(nn.Module):
    """Self-attention among the experts of each group: h' = LayerNorm(h + W_o MHA(h)) over the M experts of a
    group, for every group separately (projections shared by the groups). [..., G * M, D] -> [..., G * M, D]

    Args:
        dim: D, the expert representation width (divisible by `num_heads`).
        num_groups: G; groups are contiguous blocks of M = E / G experts.
        num_heads: attention heads.
        dropout: dropout on the attention output.
    """

    def __init__(self, dim: int, num_groups: int, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        require(dim % num_heads == 0, f"hidden {dim} must be divisible by num_heads {num_heads}")
        self.num_groups, self.num_heads = num_groups, num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        *lead, num_experts, dim = h.shape
        per_group = num_experts // self.num_groups
        # [..., G, heads, M, D / heads]: attention runs over the M axis only, so groups stay separate
        q, k, v = (
            t.unflatten(-2, (self.num_groups, per_group)).unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)
            for t in self.qkv(h).chunk(3, dim=-1)
        )
        mixed = F.scaled_dot_product_attention(q, k, v)  # [..., G, heads, M, D / heads]
        mixed = mixed.transpose(-3, -2).flatten(-2).reshape(*lead, num_experts, dim)
        return self.norm(h + self.dropout(self.out(mixed)))


class MixtureOfExperts(nn.Module):
    """Encoder, router, experts, optional inner-group attention, per-expert heads and top-k aggregation.

    `MIGA` and `PlainMoE` are this module with group-wise or global routing, with or without attention.

    Args:
        num_features: F.
        hidden: D, the width of the encoder and of the expert representations.
        num_experts: E.
        top_k: experts kept per routing group.
        routing_groups: groups the top-k is taken in (1: global).
        attention_groups: groups of inner-group attention, or None for no attention.
        expert_hidden: H, the experts' inner width (default D).
        num_heads, encoder_layers, dropout: see the submodules.
    """

    def __init__(
        self,
        num_features: int,
        hidden: int,
        num_experts: int,
        top_k: int,
        routing_groups: int = 1,
        attention_groups: int | None = None,
        expert_hidden: int | None = None,
        num_heads: int = 1,
        encoder_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        require(num_experts >= 1, f"num_experts must be >= 1, got {num_experts}")
        require(
            num_experts % routing_groups == 0 and 1 <= top_k <= num_experts // routing_groups,
            f"top_k must be in 1..{num_experts // max(routing_groups, 1)}, got {top_k}",
        )
        self.top_k, self.routing_groups = top_k, routing_groups
        self.encoder = MLPEncoder(num_features, hidden, encoder_layers, dropout)
        self.router = nn.Linear(hidden, num_experts)
        self.experts = ExpertBank(num_experts, hidden, expert_hidden or hidden, dropout)
        self.inner_attention = (
            InnerGroupAttention(hidden, attention_groups, num_heads, dropout) if attention_groups else None
        )
        self.heads = ExpertHeads(num_experts, hidden)

    def forward_details(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate: `prediction` [...], `weights` and `logits` [..., E] (router), `expert_outputs`
        [..., E] (y_e) and `representations` [..., E, D] (after attention, if any), for x [..., F]."""
        z = self.encoder(x)  # [..., D]
        logits = self.router(z)  # [..., E]
        weights = top_k_weights(logits, self.top_k, self.routing_groups)
        representations = self.experts(z)  # [..., E, D]
        if self.inner_attention is not None:
            representations = self.inner_attention(representations)
        outputs = self.heads(representations)  # [..., E]
        return {
            "prediction": (weights * outputs).sum(-1),
            "weights": weights,
            "logits": logits,
            "expert_outputs": outputs,
            "representations": representations,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., F] -> the predicted (standardised) return [...]."""
        return self.forward_details(x)["prediction"]


class MIGA(MixtureOfExperts):
    """MIGA: G groups of M experts, top-k routing within each group, inner-group attention.

    Args:
        num_features: F.
        hidden: D.
        num_groups: G.
        experts_per_group: M.
        top_k: experts kept per group.
        inner_attention: False gives the ablation without inner-group attention.
        expert_hidden, num_heads, encoder_layers, dropout: see `MixtureOfExperts`.
    """

    def __init__(
        self,
        num_features: int,
        hidden: int = 32,
        num_groups: int = 2,
        experts_per_group: int = 4,
        top_k: int = 2,
        inner_attention: bool = True,
        expert_hidden: int | None = None,
        num_heads: int = 1,
        encoder_layers: int = 2,
        dropout: float = 0.0,
    ):
        require(num_groups >= 1 and experts_per_group >= 1, "num_groups and experts_per_group must be >= 1")
        super().__init__(
            num_features,
            hidden,
            num_groups * experts_per_group,
            top_k,
            routing_groups=num_groups,
            attention_groups=num_groups if inner_attention else None,
            expert_hidden=expert_hidden,
            num_heads=num_heads,
            encoder_layers=encoder_layers,
            dropout=dropout,
        )


class PlainMoE(MixtureOfExperts):
    """The plain MoE baseline: global top-k over E experts, no groups, no interaction between experts."""

    def __init__(
        self,
        num_features: int,
        hidden: int = 32,
        num_experts: int = 8,
        top_k: int = 4,
        expert_hidden: int | None = None,
        encoder_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__(
            num_features,
            hidden,
            num_experts,
            top_k,
            routing_groups=1,
            attention_groups=None,
            expert_hidden=expert_hidden,
            encoder_layers=encoder_layers,
            dropout=dropout,
        )


class SingleModel(nn.Module):
    """The single-model baseline: the same encoder, one MLP D -> H -> D and a linear head. [..., F] -> [...]"""

    def __init__(
        self, num_features: int, hidden: int = 32, mlp_hidden: int = 256, encoder_layers: int = 2, dropout: float = 0.0
    ):
        super().__init__()
        self.encoder = MLPEncoder(num_features, hidden, encoder_layers, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, hidden)
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.encoder(x))).squeeze(-1)


VARIANTS = ("miga", "miga_no_attention", "moe", "single")


def build_model(
    variant: str,
    num_features: int,
    hidden: int = 32,
    num_groups: int = 2,
    experts_per_group: int = 4,
    top_k: int = 2,
    expert_hidden: int | None = None,
    num_heads: int = 1,
    encoder_layers: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """One of `VARIANTS` at a common scale: the plain MoE gets the same E = G * M experts and keeps G * top_k of
    them; the single model's MLP is E times as wide as one expert."""
    require(variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    width = expert_hidden or hidden
    if variant == "single":
        return SingleModel(num_features, hidden, num_groups * experts_per_group * width, encoder_layers, dropout)
    if variant == "moe":
        return PlainMoE(
            num_features, hidden, num_groups * experts_per_group, num_groups * top_k, width, encoder_layers, dropout
        )
    return MIGA(
        num_features,
        hidden,
        num_groups,
        experts_per_group,
        top_k,
        inner_attention=variant == "miga",
        expert_hidden=width,
        num_heads=num_heads,
        encoder_layers=encoder_layers,
        dropout=dropout,
    )
