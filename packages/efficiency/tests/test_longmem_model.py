"""LongMem's model: the fused memory attention against naive per-token references, the frozen backbone, the SideNet
with an empty memory reducing to a local model, and the parallel document pass equal to streaming segments."""

import math

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.core.layers import CausalSelfAttention
from paperzoo.core.lm.gpt import GPT
from paperzoo.efficiency.sequence.longmem.memory import MemoryBank
from paperzoo.efficiency.sequence.longmem.model import (
    LongMem,
    MemoryAugmentedAttention,
    backbone_states,
    fuse_memory_attention,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (two spinning threads on a shared 2-core machine were 20x slower here)."""
    with torch_threads(1):
        yield


def random_inputs(seed: int = 0, batch: int = 2, heads: int = 2, length: int = 5, slots: int = 6, dim: int = 4):
    torch.manual_seed(seed)
    q, k, v, mq = (torch.randn(batch, heads, length, dim, dtype=torch.float64) for _ in range(4))
    mk, mv = (torch.randn(batch, heads, length, slots, dim, dtype=torch.float64) for _ in range(2))
    valid = torch.rand(batch, heads, length, slots) < 0.7
    valid[0, 0, 1] = False  # a token with no memory at all
    valid[1, 1, 2, 0] = True
    gate = torch.randn(heads, dtype=torch.float64)
    return q, k, v, mq, mk, mv, valid, gate


def naive_softmax_attention(query, keys, values):
    scores = [float(query @ key) / math.sqrt(len(query)) for key in keys]
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return sum(w / total * value for w, value in zip(weights, values, strict=True))


def test_gated_fusion_matches_a_per_token_loop():
    q, k, v, mq, mk, mv, valid, gate = random_inputs()
    got = fuse_memory_attention(q, k, v, mq, mk, mv, valid, gate, fusion="gate")
    batch, heads, length, _ = q.shape
    for b in range(batch):
        for h in range(heads):
            for t in range(length):
                local = naive_softmax_attention(q[b, h, t], k[b, h, : t + 1], v[b, h, : t + 1])
                slots = valid[b, h, t].nonzero().flatten().tolist()
                if not slots:
                    expected = local
                else:
                    memory = naive_softmax_attention(mq[b, h, t], mk[b, h, t, slots], mv[b, h, t, slots])
                    g = 1 / (1 + math.exp(-float(gate[h])))
                    expected = (1 - g) * local + g * memory
                torch.testing.assert_close(got[b, h, t], expected)


def test_concat_fusion_matches_naive_concatenated_attention():
    q, k, v, mq, mk, mv, valid, gate = random_inputs(seed=1)
    got = fuse_memory_attention(q, k, v, mq, mk, mv, valid, gate, fusion="concat")
    batch, heads, length, dim = q.shape
    for b in range(batch):
        for h in range(heads):
            for t in range(length):
                slots = valid[b, h, t].nonzero().flatten().tolist()
                # One softmax over [retrieved memory tokens; local tokens 0..t]; memory keys meet the un-rotated query.
                scores = [float(mq[b, h, t] @ mk[b, h, t, s]) for s in slots]
                scores += [float(q[b, h, t] @ k[b, h, j]) for j in range(t + 1)]
                rows = [mv[b, h, t, s] for s in slots] + [v[b, h, j] for j in range(t + 1)]
                weights = torch.softmax(torch.tensor(scores, dtype=torch.float64) / math.sqrt(dim), dim=0)
                expected = sum(w * row for w, row in zip(weights, rows, strict=True))
                torch.testing.assert_close(got[b, h, t], expected)


def test_fusion_name_is_validated():
    q, k, v, mq, mk, mv, valid, gate = random_inputs()
    with pytest.raises(ConfigError, match="fusion"):
        fuse_memory_attention(q, k, v, mq, mk, mv, valid, gate, fusion="sum")  # type: ignore[arg-type]


def tiny_backbone(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(257, dim=32, n_layers=4, n_heads=2, max_seq_len=32)


def test_memory_attention_with_an_empty_memory_is_plain_causal_attention():
    torch.manual_seed(0)
    layer = MemoryAugmentedAttention(16, 2, 32, retrieve_tokens=8)
    plain = CausalSelfAttention(16, 2, 32)
    plain.load_state_dict(layer.state_dict(), strict=False)
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(layer(x, MemoryBank(3, 2, 8, capacity=16)), plain(x))
    torch.testing.assert_close(layer(x, None), plain(x))


def test_sidenet_with_empty_memory_reduces_to_the_local_model():
    backbone = tiny_backbone()
    with_memory = LongMem(backbone, memory_size=64, retrieve_tokens=8)
    local = LongMem(backbone, memory_size=64, retrieve_tokens=8, use_memory=False)
    local.load_state_dict(with_memory.state_dict())
    tokens = torch.randint(0, 257, (2, 64))
    torch.testing.assert_close(with_memory(tokens[:, :16], with_memory.new_memory(2)), local(tokens[:, :16]))
    a, b = with_memory.forward_document(tokens, 16), local.forward_document(tokens, 16)
    torch.testing.assert_close(a[:, :16], b[:, :16])  # the first segment has nothing to read
    assert (a[:, 16:] - b[:, 16:]).abs().max() > 1e-4  # later segments read the memory


def test_backbone_states_reproduce_the_gpt_and_its_keys():
    backbone = tiny_backbone().eval()
    tokens = torch.randint(0, 257, (2, 12))
    hiddens, keys, values = backbone_states(backbone, tokens, memory_layer=3)
    assert len(hiddens) == 5
    torch.testing.assert_close(backbone.head(backbone.norm(hiddens[-1])), backbone(tokens))
    block = backbone.blocks[3]
    qkv = block.attn.qkv(block.attn_norm(hiddens[3])).view(2, 12, 3, 2, 16)
    torch.testing.assert_close(keys, qkv[:, :, 1].transpose(1, 2))
    torch.testing.assert_close(values, qkv[:, :, 2].transpose(1, 2))


def test_sidenet_is_initialised_from_the_backbone_and_caches_its_layer():
    backbone = tiny_backbone()
    model = LongMem(backbone, reduction_factor=2, memory_layer=-1, memory_size=64, retrieve_tokens=8)
    assert len(model.layers) == 2 and model.memory_layer == 1 and model.backbone_memory_layer == 3
    for j, layer in enumerate(model.layers):
        reference = backbone.blocks[2 * j + 1].state_dict()
        for name, tensor in reference.items():
            torch.testing.assert_close(layer.state_dict()[name], tensor)
    tokens = torch.randint(0, 257, (1, 16))
    memory = model.new_memory(1)
    model(tokens, memory)
    _, keys, _ = backbone_states(backbone, tokens, 3)
    torch.testing.assert_close(memory.keys[0, :, :, :, :], keys[0].reshape(2, 4, 4, 16))


@pytest.mark.parametrize("fusion", ["gate", "concat"])
@pytest.mark.parametrize("memory_size", [8, 20, 256])
def test_parallel_document_pass_equals_streaming_segments(fusion, memory_size):
    model = LongMem(tiny_backbone(1), memory_size=memory_size, retrieve_tokens=8, fusion=fusion).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.memory_gate.normal_()
    tokens = torch.randint(0, 257, (2, 64))
    parallel = model.forward_document(tokens, 16)
    streaming = model.forward_document(tokens, 16, streaming=True)
    torch.testing.assert_close(parallel, streaming)


def test_backbone_is_frozen_and_unchanged_by_a_training_step():
    model = LongMem(tiny_backbone(), memory_size=64, retrieve_tokens=8)
    before = {name: p.clone() for name, p in model.backbone.named_parameters()}
    model.train()
    assert not model.backbone.training and all(not p.requires_grad for p in model.backbone.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tokens = torch.randint(0, 257, (2, 65))
    logits = model.forward_document(tokens[:, :-1], 16)
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.layers[1].attn.memory_gate.grad is not None and model.layers[0].attn.qkv.weight.grad is not None
    optimizer.step()
    for name, p in model.backbone.named_parameters():
        assert torch.equal(p, before[name]), name


def test_configuration_errors_name_the_value():
    with pytest.raises(ConfigError, match="reduction_factor"):
        LongMem(tiny_backbone(), reduction_factor=3)
    with pytest.raises(ConfigError, match="memory_layer"):
        LongMem(tiny_backbone(), memory_layer=2)
    with pytest.raises(ConfigError, match="retrieve_tokens"):
        LongMem(tiny_backbone(), retrieve_tokens=6)


def test_memory_source_layer_is_cached_and_initialises_the_memory_layer():
    backbone = tiny_backbone()
    model = LongMem(backbone, memory_layer=1, memory_source_layer=1, memory_size=64, retrieve_tokens=8)
    assert model.backbone_memory_layer == 1
    for name, tensor in backbone.blocks[1].state_dict().items():
        torch.testing.assert_close(model.layers[1].state_dict()[name], tensor)  # the memory layer: from block 1
        torch.testing.assert_close(model.layers[0].state_dict()[name], tensor)  # side layer 0: block 2 * 0 + 1
    tokens = torch.randint(0, 257, (1, 16))
    memory = model.new_memory(1)
    model(tokens, memory)
    _, keys, _ = backbone_states(backbone, tokens, 1)
    torch.testing.assert_close(memory.keys[0], keys[0].reshape(2, 4, 4, 16))
    with pytest.raises(ConfigError, match="memory_source_layer"):
        LongMem(backbone, memory_source_layer=4)


def test_faiss_search_gives_the_same_logits_as_torch():
    pytest.importorskip("faiss")
    backbone = tiny_backbone(2)
    exact = LongMem(backbone, memory_size=40, retrieve_tokens=8, search="torch")
    flat = LongMem(backbone, memory_size=40, retrieve_tokens=8, search="faiss")
    flat.load_state_dict(exact.state_dict())
    tokens = torch.randint(0, 257, (2, 64))
    torch.testing.assert_close(
        flat.forward_document(tokens, 16, streaming=True), exact.forward_document(tokens, 16, streaming=True)
    )
