"""LongMem's memory bank: chunking and FIFO eviction by hand, top-K retrieval against brute force, faiss equal to
torch, and the whole-document memory equal to the bank read segment by segment."""

import itertools

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.longmem.memory import DocumentMemory, MemoryBank


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (two spinning threads on a shared 2-core machine were 20x slower here)."""
    with torch_threads(1):
        yield


def marked(batch: int, heads: int, length: int, dim: int, start: int) -> torch.Tensor:
    """Keys whose every entry is the token's stream position (start, start + 1, ...)."""
    positions = torch.arange(start, start + length, dtype=torch.float32)
    return positions.view(1, 1, length, 1).expand(batch, heads, length, dim).clone()


def test_chunking_and_fifo_eviction_by_hand():
    bank = MemoryBank(batch=1, n_heads=1, head_dim=2, capacity=8, chunk_size=4)
    bank.add(marked(1, 1, 6, 2, 0), -marked(1, 1, 6, 2, 0))  # tokens 0..5: one chunk, 2 pending
    assert bank.num_chunks == 1 and len(bank) == 4
    assert bank.keys[0, 0, 0, :, 0].tolist() == [0, 1, 2, 3]
    assert bank.values[0, 0, 0, :, 0].tolist() == [0, -1, -2, -3]
    assert bank.positions.tolist() == [0]
    bank.add(marked(1, 1, 3, 2, 6), -marked(1, 1, 3, 2, 6))  # tokens 6..8: pending 4, 5 join 6, 7; 8 waits
    assert bank.positions.tolist() == [0, 4]
    assert bank.keys[0, 0, 1, :, 0].tolist() == [4, 5, 6, 7]
    bank.add(marked(1, 1, 7, 2, 9), -marked(1, 1, 7, 2, 9))  # tokens 9..15: chunks 8-11, 12-15; capacity 2 chunks
    assert bank.positions.tolist() == [8, 12]  # the oldest two chunks were evicted
    assert bank.keys[0, 0, :, :, 0].tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert bank.chunk_keys()[0, 0, :, 0].tolist() == [9.5, 13.5]  # a chunk is retrieved by its mean key


def test_bank_validates_its_arguments():
    with pytest.raises(ConfigError, match="multiple of chunk_size"):
        MemoryBank(1, 1, 2, capacity=6, chunk_size=4)
    bank = MemoryBank(1, 2, 4, capacity=8)
    with pytest.raises(ConfigError, match="shape"):
        bank.add(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))


def test_empty_bank_retrieves_nothing():
    bank = MemoryBank(2, 2, 4, capacity=16)
    keys, values, valid = bank.retrieve(torch.randn(2, 2, 5, 4), n_chunks=2)
    assert keys.shape == values.shape == (2, 2, 5, 8, 4) and not valid.any()


@pytest.mark.parametrize("search", ["torch", "faiss"])
def test_top_k_retrieval_matches_brute_force(search):
    if search == "faiss":
        pytest.importorskip("faiss")
    torch.manual_seed(0)
    batch, heads, dim, size = 2, 3, 8, 4
    bank = MemoryBank(batch, heads, dim, capacity=40, chunk_size=size, search=search)
    keys, values = torch.randn(batch, heads, 48, dim), torch.randn(batch, heads, 48, dim)
    bank.add(keys[:, :, :20], values[:, :, :20])
    bank.add(keys[:, :, 20:], values[:, :, 20:])  # 12 chunks offered, the last 10 kept
    queries = torch.randn(batch, heads, 5, dim)
    got_keys, got_values, valid = bank.retrieve(queries, n_chunks=3)
    assert valid.all()
    stored_keys = keys[:, :, 8:].reshape(batch, heads, 10, size, dim)
    stored_values = values[:, :, 8:].reshape(batch, heads, 10, size, dim)
    for b, h, t in itertools.product(range(batch), range(heads), range(5)):
        scores = [float(queries[b, h, t] @ stored_keys[b, h, c].mean(dim=0)) for c in range(10)]
        best = sorted(range(10), key=lambda c: -scores[c])[:3]  # brute force, best first
        expected_keys = torch.cat([stored_keys[b, h, c] for c in best])  # [3 * S, Dh]
        expected_values = torch.cat([stored_values[b, h, c] for c in best])
        torch.testing.assert_close(got_keys[b, h, t], expected_keys)
        torch.testing.assert_close(got_values[b, h, t], expected_values)


def test_faiss_search_returns_the_torch_chunks():
    pytest.importorskip("faiss")
    torch.manual_seed(1)
    banks = [MemoryBank(2, 2, 16, capacity=256, chunk_size=4, search=s) for s in ("torch", "faiss")]
    keys, values = torch.randn(2, 2, 300, 16), torch.randn(2, 2, 300, 16)
    for bank in banks:
        bank.add(keys, values)
    queries = torch.randn(2, 2, 7, 16)
    torch_index, torch_valid = banks[0].search(queries, 8)
    faiss_index, faiss_valid = banks[1].search(queries, 8)
    assert torch.equal(torch_index, faiss_index) and torch_valid.all() and faiss_valid.all()
    few = MemoryBank(1, 1, 4, capacity=8, search="faiss")  # fewer chunks than asked: the rest is invalid
    few.add(torch.randn(1, 1, 8, 4), torch.randn(1, 1, 8, 4))
    _, valid = few.search(torch.randn(1, 1, 3, 4), 5)
    assert valid[..., :2].all() and not valid[..., 2:].any()


@pytest.mark.parametrize("capacity", [4, 8, 20, 64])
def test_document_memory_equals_the_bank_read_segment_by_segment(capacity):
    torch.manual_seed(2)
    batch, heads, dim, segment, segments = 2, 2, 4, 8, 4
    keys, values = (
        torch.randn(batch, heads, segment * segments, dim),
        torch.randn(batch, heads, segment * segments, dim),
    )
    queries = torch.randn(batch, segments, heads, segment, dim)
    document = DocumentMemory(keys, values, segment, capacity, chunk_size=4)
    all_keys, all_values, all_valid = document.retrieve(queries.flatten(0, 1), n_chunks=3)
    bank = MemoryBank(batch, heads, dim, capacity, chunk_size=4)
    for s in range(segments):
        bank_keys, bank_values, bank_valid = bank.retrieve(queries[:, s], n_chunks=3)
        got_valid = all_valid.view(batch, segments, *all_valid.shape[1:])[:, s]
        assert torch.equal(got_valid, bank_valid), f"segment {s}"
        got_keys = all_keys.view(batch, segments, *all_keys.shape[1:])[:, s]
        got_values = all_values.view(batch, segments, *all_values.shape[1:])[:, s]
        torch.testing.assert_close(got_keys[bank_valid], bank_keys[bank_valid])
        torch.testing.assert_close(got_values[bank_valid], bank_values[bank_valid])
        bank.add(keys[:, :, s * segment : (s + 1) * segment], values[:, :, s * segment : (s + 1) * segment])
