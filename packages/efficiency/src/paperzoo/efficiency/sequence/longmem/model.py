"""LongMem: a frozen backbone LM, a cached memory of its past keys and values, and a trainable residual SideNet with
one memory-augmented layer.

"Augmenting Language Models with Long-Term Memory" (Wang et al., arXiv:2306.07174), section 2:

- the frozen backbone (here the core `GPT`, byte-level) encodes each segment; the attention keys and values of one
  of its layers (`memory_layer` of the SideNet reads backbone layer `reduction_factor * memory_layer + 1`, as the
  reference code's `--retrieval-layer-index 17` with side layer 8) are appended to a chunked FIFO `MemoryBank`
  after the segment is processed, so a segment reads the memory of the segments before it;
- the SideNet has `n_layers / reduction_factor` layers of the backbone's width. Its input is the backbone's
  embedding output H_b^0, and side layer j adds the backbone's residual update over its layers:
  H_s^{j+1} = f_j(H_s^j) + (H_b^{r(j+1)} - H_b^{rj}) (cross-network residual connections). Side layer j is
  initialised from backbone layer r*j + 1 and the side's final norm from the backbone's; the LM head is the
  backbone's (frozen, tied to its embedding);
- the memory-augmented layer's queries (its own q projection) retrieve, per head and per token, the top K / S chunks
  by inner product with the chunks' mean key, and the layer fuses attention over its local (in-segment, causal)
  context with attention over the K retrieved memory tokens: H = (1 - sigmoid(g)) * A_local + sigmoid(g) * A_mem,
  one learnt gate g per head, initialised at 0 (the reference code's `memory_bias`; the paper writes the gate on
  the other term, which only flips g's sign). Tokens with an empty memory use local attention alone, as the
  reference code does before the first segment is stored.
- the backbone is frozen, so keys and values cached from it never go stale while the SideNet trains.

`fusion="concat"` is an alternative to the gate, kept for comparison: one softmax over the concatenation of the
retrieved memory tokens and the local causal context (the "joint attention" of Memorizing Transformers' kNN layer
without its gate).

Deviations, each deliberate:
- the backbone uses RoPE (the reference's GPT-2 has absolute positions baked into its hidden states, its SideNet
  ALiBi). Memory keys are cached before the rotation, and memory attention and retrieval use the un-rotated query:
  cached tokens carry no position, which is what a bank of arbitrary past chunks needs. Local attention is rotated
  as usual;
- the side blocks are the core pre-norm blocks (attention then SwiGLU, sequentially), where the reference's GPT-J
  style layers run attention and MLP in parallel;
- a small byte-level GPT pretrained here (`pretrained_backbone`) stands in for GPT-2 medium.

Shapes: B = batch, T = tokens of a segment, N = tokens of a document, D = width, H = heads, Dh = D / H,
K = retrieved memory tokens per query, V = vocabulary.
"""

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.core.io import atomic_torch_save, cache_dir, load_checkpoint_file
from paperzoo.core.layers import CausalSelfAttention, TransformerBlock
from paperzoo.core.lm.gpt import GPT
from paperzoo.efficiency.sequence.longmem.memory import DocumentMemory, Memory, MemoryBank, SearchBackend

log = logging.getLogger(__name__)

Fusion = Literal["gate", "concat"]


# --- the backbone's states -------------------------------------------------------------------------------------------
def backbone_states(
    backbone: GPT, tokens: torch.Tensor, memory_layer: int
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run the backbone over one segment, keeping every hidden state and one layer's attention keys and values.

    Args:
        backbone: the frozen `GPT`.
        tokens: [B, T] int64.
        memory_layer: the backbone block whose attention keys and values are returned.

    Returns:
        hidden states [H_b^0 (embedding output), ..., H_b^L] each [B, T, D]; the keys and values of block
        `memory_layer`, [B, H, T, Dh] each, before the rotary embedding.
    """
    x = backbone.embed(tokens)  # [B, T, D]
    hiddens = [x]
    keys = values = x
    for index, block in enumerate(backbone.blocks):
        if index == memory_layer:
            attn = block.attn
            batch, length, dim = x.shape
            qkv = attn.qkv(block.attn_norm(x)).view(batch, length, 3, attn.n_heads, dim // attn.n_heads)
            keys, values = (t.transpose(1, 2) for t in qkv.unbind(2)[1:])  # [B, H, T, Dh]
        x = block(x)
        hiddens.append(x)
    return hiddens, keys, values


# --- memory-augmented attention -------------------------------------------------------------------------------------
def fuse_memory_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    memory_query: torch.Tensor,
    memory_keys: torch.Tensor,
    memory_values: torch.Tensor,
    memory_valid: torch.Tensor,
    gate: torch.Tensor,
    fusion: Fusion = "gate",
) -> torch.Tensor:
    """Attention over the local causal context and each token's retrieved memory tokens.

    Args:
        q, k, v: local queries, keys, values [B, H, T, Dh] (q and k rotated).
        memory_query: the un-rotated queries [B, H, T, Dh].
        memory_keys, memory_values: each token's retrieved memory [B, H, T, K, Dh].
        memory_valid: [B, H, T, K] bool, False for slots the bank could not fill.
        gate: [H] gate logits g ("gate" fusion only).
        fusion: "gate" (LongMem: two softmaxes mixed by sigmoid(g) per head) or "concat" (one softmax over memory
            and local context together).

    Returns:
        [B, H, T, Dh]. A token without any valid memory slot gets plain causal attention.
    """
    scale = q.shape[-1] ** -0.5
    # Batched [1, Dh] x [Dh, K] products (an einsum here materialised the [B, H, T, K, Dh] product on CPU).
    memory_scores = (memory_query.unsqueeze(-2) @ memory_keys.transpose(-1, -2)).squeeze(-2) * scale  # [B, H, T, K]
    # The most negative finite value (not -inf): a row without any valid slot stays finite, and is replaced below.
    memory_scores = memory_scores.masked_fill(~memory_valid, torch.finfo(memory_scores.dtype).min)
    has_memory = memory_valid.any(dim=-1, keepdim=True)  # [B, H, T, 1]
    if fusion == "gate":
        local = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, Dh]
        memory = (memory_scores.softmax(dim=-1).unsqueeze(-2) @ memory_values).squeeze(-2)  # [B, H, T, Dh]
        weight = torch.sigmoid(gate).view(1, -1, 1, 1)  # [1, H, 1, 1]
        return torch.where(has_memory, (1 - weight) * local + weight * memory, local)
    require(fusion == "concat", f"fusion must be 'gate' or 'concat', got {fusion!r}")
    length = q.shape[-2]
    local_scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, T, T]
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    local_scores = local_scores.masked_fill(~causal, float("-inf"))
    probs = torch.cat((memory_scores, local_scores), dim=-1).softmax(dim=-1)  # [B, H, T, K + T]
    memory_probs = probs[..., : memory_keys.shape[-2]] * has_memory  # zero where no slot is valid
    local_probs = probs[..., memory_keys.shape[-2] :]
    local_probs = torch.where(has_memory, local_probs, local_scores.softmax(dim=-1))
    return (memory_probs.unsqueeze(-2) @ memory_values).squeeze(-2) + local_probs @ v


class MemoryAugmentedAttention(CausalSelfAttention):
    """Causal self-attention that also reads the top-K chunks of a `MemoryBank` (LongMem's memory-augmented layer).

    Args:
        dim, n_heads, max_seq_len, dropout: see `CausalSelfAttention` (the same parameter names, so a backbone
            block's weights load into it).
        retrieve_tokens: K, memory tokens each query attends to (a multiple of the bank's chunk size).
        fusion: see `fuse_memory_attention`.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        max_seq_len: int,
        dropout: float = 0.0,
        retrieve_tokens: int = 32,
        fusion: Fusion = "gate",
    ):
        super().__init__(dim, n_heads, max_seq_len, dropout)
        require(retrieve_tokens > 0, f"retrieve_tokens must be positive, got {retrieve_tokens}")
        require(fusion in ("gate", "concat"), f"fusion must be 'gate' or 'concat', got {fusion!r}")
        self.retrieve_tokens, self.fusion = retrieve_tokens, fusion
        self.memory_gate = nn.Parameter(torch.zeros(n_heads))  # g per head; sigmoid(0) = 1/2 at the start

    def forward(self, x: torch.Tensor, memory: Memory | None = None) -> torch.Tensor:  # type: ignore[override]
        """x: [B, T, D] -> [B, T, D]; with an empty or absent memory exactly `CausalSelfAttention.forward`."""
        if memory is None or len(memory) == 0:
            return super().forward(x)
        require(
            self.retrieve_tokens % memory.chunk_size == 0,
            f"retrieve_tokens {self.retrieve_tokens} must be a multiple of the memory's chunk_size {memory.chunk_size}",
        )
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, dim // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        memory_keys, memory_values, valid = memory.retrieve(q, self.retrieve_tokens // memory.chunk_size)
        y = fuse_memory_attention(
            self.rotary(q), self.rotary(k), v, q, memory_keys, memory_values, valid, self.memory_gate, self.fusion
        )  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


class SideBlock(TransformerBlock):
    """A core pre-norm block whose attention can read a memory (the same parameter names as `TransformerBlock`)."""

    def __init__(self, dim: int, n_heads: int, max_seq_len: int, retrieve_tokens: int = 32, fusion: Fusion = "gate"):
        super().__init__(dim, n_heads, max_seq_len)
        self.attn = MemoryAugmentedAttention(dim, n_heads, max_seq_len, 0.0, retrieve_tokens, fusion)

    def forward(self, x: torch.Tensor, memory: Memory | None = None) -> torch.Tensor:  # type: ignore[override]
        x = x + self.attn(self.attn_norm(x), memory)
        return x + self.mlp(self.mlp_norm(x))


# --- the model ------------------------------------------------------------------------------------------------------
class LongMem(nn.Module):
    """A frozen backbone, its cached memory and a trainable residual SideNet.

    Args:
        backbone: a (pretrained) `GPT`; it is frozen here (no gradients, kept in eval mode).
        reduction_factor: r, backbone layers per side layer (the paper's 2).
        memory_layer: the side layer that reads the memory (negative counts from the end); it reads the keys and
            values of backbone block r * memory_layer + 1, from which it is also initialised.
        memory_size: tokens the bank holds per document (the paper's 65k).
        chunk_size: S, tokens per memory chunk (the paper's 4).
        retrieve_tokens: K, memory tokens each query attends to (the paper's 64).
        fusion: "gate" (the paper) or "concat", see `fuse_memory_attention`.
        search: "torch" (exact) or "faiss" (exact flat index, for large banks).
        use_memory: False gives the same SideNet without memory (the local-window baseline).
        memory_source_layer: the backbone block whose keys and values are cached, when not the paper's
            r * memory_layer + 1; the memory layer is then initialised from that block, so its queries start in the
            space of the keys it reads (the paper's pairing of side layer 8 with backbone layer 17 does the same).

    Shapes:
        forward: tokens [B, T] (T <= the backbone's max_seq_len) -> logits [B, T, V].
        forward_document: tokens [B, N] -> logits [B, N, V], segment by segment.
    """

    def __init__(
        self,
        backbone: GPT,
        reduction_factor: int = 2,
        memory_layer: int = -1,
        memory_size: int = 2048,
        chunk_size: int = 4,
        retrieve_tokens: int = 32,
        fusion: Fusion = "gate",
        search: SearchBackend = "torch",
        use_memory: bool = True,
        memory_source_layer: int | None = None,
    ):
        super().__init__()
        depth = len(backbone.blocks)
        require(
            reduction_factor > 0 and depth % reduction_factor == 0,
            f"the backbone's {depth} layers must divide by reduction_factor, got {reduction_factor}",
        )
        side_depth = depth // reduction_factor
        memory_layer = memory_layer + side_depth if memory_layer < 0 else memory_layer
        require(
            0 <= memory_layer < side_depth and reduction_factor * memory_layer + 1 < depth,
            f"memory_layer must index one of the {side_depth} side layers whose backbone layer "
            f"{reduction_factor} * memory_layer + 1 exists, got {memory_layer}",
        )
        source = reduction_factor * memory_layer + 1 if memory_source_layer is None else memory_source_layer
        require(0 <= source < depth, f"memory_source_layer must index one of the {depth} backbone blocks, got {source}")
        require(
            retrieve_tokens > 0 and retrieve_tokens % chunk_size == 0,
            f"retrieve_tokens must be a positive multiple of chunk_size {chunk_size}, got {retrieve_tokens}",
        )
        require(
            memory_size >= chunk_size and memory_size % chunk_size == 0,
            f"memory_size must be a positive multiple of chunk_size {chunk_size}, got {memory_size}",
        )
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.reduction_factor, self.memory_layer, self.memory_source_layer = reduction_factor, memory_layer, source
        self.memory_size, self.chunk_size, self.search = memory_size, chunk_size, search
        self.use_memory = use_memory
        first = backbone.blocks[0].attn
        dim, n_heads = first.qkv.in_features, first.n_heads
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.max_seq_len = backbone.max_seq_len
        self.layers = nn.ModuleList(
            SideBlock(dim, n_heads, backbone.max_seq_len, retrieve_tokens, fusion) for _ in range(side_depth)
        )
        self.norm = nn.RMSNorm(dim)
        # The paper's initialisation: side layer j from backbone layer r * j + 1, the final norm from the backbone's.
        for j, layer in enumerate(self.layers):
            origin = source if j == memory_layer else reduction_factor * j + 1
            layer.load_state_dict(backbone.blocks[origin].state_dict(), strict=False)
        self.norm.load_state_dict(backbone.norm.state_dict())

    @property
    def backbone_memory_layer(self) -> int:
        """The backbone block whose keys and values are cached."""
        return self.memory_source_layer

    def train(self, mode: bool = True) -> "LongMem":
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, whatever the SideNet's mode
        return self

    def new_memory(self, batch: int, memory_size: int | None = None, device: torch.device | str = "cpu") -> MemoryBank:
        """An empty bank for `batch` documents (`memory_size` overrides the configured capacity)."""
        return MemoryBank(
            batch,
            self.n_heads,
            self.head_dim,
            memory_size or self.memory_size,
            self.chunk_size,
            self.search,
            device,
            self.backbone.embed.weight.dtype,
        )

    def forward(self, tokens: torch.Tensor, memory: MemoryBank | None = None) -> torch.Tensor:
        """One segment: read `memory` (if given and `use_memory`), then append this segment's keys and values."""
        require(
            tokens.shape[-1] <= self.max_seq_len,
            f"segment length {tokens.shape[-1]} exceeds the backbone's max_seq_len {self.max_seq_len}",
        )
        with torch.no_grad():
            hiddens, keys, values = backbone_states(self.backbone, tokens, self.backbone_memory_layer)
        logits = self.side(hiddens, memory if self.use_memory else None)
        if memory is not None and self.use_memory:
            memory.add(keys, values)
        return logits

    def side(self, hiddens: list[torch.Tensor], memory: Memory | None) -> torch.Tensor:
        """The SideNet over the backbone's hidden states [B, T, D] (L + 1 of them) -> logits [B, T, V]."""
        h = hiddens[0]  # [B, T, D]
        r = self.reduction_factor
        for j, layer in enumerate(self.layers):
            h = layer(h, memory if j == self.memory_layer else None) + (hiddens[r * (j + 1)] - hiddens[r * j])
        return F.linear(self.norm(h), self.backbone.head.weight)  # [B, T, V]

    def forward_document(
        self, tokens: torch.Tensor, segment_len: int, memory_size: int | None = None, streaming: bool = False
    ) -> torch.Tensor:
        """A whole document [B, N] -> logits [B, N, V], each segment reading the memory of the ones before.

        By default all segments run in one batch, reading a `DocumentMemory` (what the bank would hold for each);
        `streaming=True` (or a length that does not split into whole segments and chunks) runs them one after the
        other through a fresh `MemoryBank`, which gives the same logits.
        """
        require(
            0 < segment_len <= self.max_seq_len, f"segment_len must be in [1, {self.max_seq_len}], got {segment_len}"
        )
        batch, length = tokens.shape
        capacity = memory_size or self.memory_size
        if streaming or length % segment_len or segment_len % self.chunk_size:
            memory = self.new_memory(batch, capacity, tokens.device) if self.use_memory else None
            return torch.cat([self(segment, memory) for segment in tokens.split(segment_len, dim=1)], dim=1)
        segments = tokens.reshape(-1, segment_len)  # [B * segments, T]
        with torch.no_grad():
            hiddens, keys, values = backbone_states(self.backbone, segments, self.backbone_memory_layer)
        document_memory = None
        if self.use_memory:
            heads, head_dim = keys.shape[1], keys.shape[3]

            def whole(t: torch.Tensor) -> torch.Tensor:  # [B * segments, H, T, Dh] -> [B, H, N, Dh]
                return (
                    t.view(batch, -1, heads, segment_len, head_dim).transpose(1, 2).reshape(batch, heads, -1, head_dim)
                )

            document_memory = DocumentMemory(whole(keys), whole(values), segment_len, capacity, self.chunk_size)
        return self.side(hiddens, document_memory).view(batch, length, -1)

    def backbone_logits(self, tokens: torch.Tensor, segment_len: int) -> torch.Tensor:
        """The frozen backbone alone over a document, segment by segment (the reference point). [B, N, V]"""
        with torch.no_grad():
            return torch.cat([self.backbone(segment) for segment in tokens.split(segment_len, dim=1)], dim=1)


# --- the pretrained backbone ----------------------------------------------------------------------------------------
BACKBONE_CACHE_VERSION = 1


@dataclass(frozen=True)
class BackboneRecipe:
    """How the byte-level backbone is pretrained on the training articles of the Wikipedia sample.

    The split is `paperzoo.efficiency.sequence.longmem.data.split_documents(..., val_fraction, test_fraction,
    split_seed)`, the same as `LongMemDataModule`'s with these values, so the held-out articles stay unseen.
    """

    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    steps: int = 1200
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0

    def key(self) -> str:
        text = json.dumps({"version": BACKBONE_CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrained_backbone(recipe: BackboneRecipe = BackboneRecipe()) -> tuple[GPT, dict[str, float]]:
    """The backbone `GPT` trained by `recipe`, from the cache (`cache_dir("sequence", "longmem")`) or trained now
    and cached atomically. Returns the model and its pretraining figures (train steps, held-out loss in nats)."""
    from paperzoo.core.lm.data import ByteTokenizer, encode_documents, wikipedia_sample
    from paperzoo.efficiency.sequence.longmem.data import split_documents

    require(recipe.steps > 0, f"backbone pretraining steps must be positive, got {recipe.steps}")
    path = cache_dir("sequence", "longmem") / f"backbone-{recipe.key()}.pt"
    model = GPT(ByteTokenizer.vocab_size, recipe.dim, recipe.n_layers, recipe.n_heads, recipe.seq_len)
    if path.exists():
        saved = load_checkpoint_file(path)
        model.load_state_dict(saved["state_dict"])
        return model.eval(), saved["figures"]
    train_docs, val_docs, _ = split_documents(
        wikipedia_sample(), recipe.val_fraction, recipe.test_fraction, recipe.split_seed
    )
    tokenizer = ByteTokenizer()
    train_stream, val_stream = encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer)
    generator = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        model = GPT(ByteTokenizer.vocab_size, recipe.dim, recipe.n_layers, recipe.n_heads, recipe.seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, recipe.steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    for _ in range(recipe.steps):
        starts = torch.randint(0, len(train_stream) - recipe.seq_len - 1, (recipe.batch_size,), generator=generator)
        batch = torch.stack([train_stream[s : s + recipe.seq_len + 1] for s in starts.tolist()])  # [B, T + 1]
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        usable = (len(val_stream) - 1) // recipe.seq_len * recipe.seq_len
        windows = val_stream[: usable + 1]
        inputs = windows[:-1].view(-1, recipe.seq_len)[:64]
        targets = windows[1:].view(-1, recipe.seq_len)[:64]
        val_loss = float(F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()))
    figures = {"pretrain_steps": float(recipe.steps), "pretrain_val_loss": val_loss}
    log.info("pretrained the LongMem backbone %s: held-out loss %.3f nats/byte", recipe, val_loss)
    atomic_torch_save({"recipe": asdict(recipe), "state_dict": model.state_dict(), "figures": figures}, path)
    return model, figures
