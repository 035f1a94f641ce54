"""MultiVectorStore: codecs against the original vectors, gather against a naive padding, atomic save/load."""

import os

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.retrieval.index.multivector import MultiVectorStore
from paperzoo.retrieval.late.scoring import maxsim


def documents(count: int = 60, dim: int = 32, seed: int = 0, clusters: int = 16) -> list[torch.Tensor]:
    """Unit token vectors around a few centres (as contextual token embeddings are), 0-40 per document."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    docs = []
    for length in torch.randint(0, 41, (count,), generator=g).tolist():
        points = centres[torch.randint(clusters, (length,), generator=g)] + 0.15 * torch.randn(length, dim, generator=g)
        docs.append(torch.nn.functional.normalize(points, dim=-1))
    return docs


def naive_padding(docs: list[torch.Tensor], order: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(docs[i].shape[0] for i in order))
    vectors, mask = torch.zeros(len(order), width, docs[0].shape[1]), torch.zeros(len(order), width, dtype=torch.bool)
    for row, i in enumerate(order):
        vectors[row, : docs[i].shape[0]] = docs[i]
        mask[row, : docs[i].shape[0]] = True
    return vectors, mask


@pytest.fixture(scope="module")
def docs() -> list[torch.Tensor]:
    return documents()


def test_fp32_gather_equals_naive_padding(docs):
    store = MultiVectorStore.from_sequences(docs, "fp32")
    order = [5, 0, 5, 59, 17]
    vectors, mask = store.gather(order)
    expected_vectors, expected_mask = naive_padding(docs, order)
    assert torch.equal(mask, expected_mask) and torch.equal(vectors, expected_vectors)
    assert store.lengths.tolist() == [d.shape[0] for d in docs]
    assert torch.equal(store.document(17), docs[17])
    all_vectors, _ = store.gather()
    assert all_vectors.shape == (60, max(d.shape[0] for d in docs), 32)


def test_empty_documents_gather_to_a_zero_mask_row_and_score_zero():
    docs = [torch.zeros(0, 4), torch.ones(2, 4), torch.zeros(0, 4)]
    store = MultiVectorStore.from_sequences(docs, "fp16")
    vectors, mask = store.gather([0, 2])
    assert vectors.shape == (2, 1, 4) and not mask.any()
    queries = torch.ones(1, 3, 4)
    assert maxsim(queries, torch.ones(1, 3), vectors, mask).tolist() == [[0.0, 0.0]]


def test_from_padded_equals_from_sequences(docs):
    padded, mask = naive_padding(docs, list(range(len(docs))))
    a = MultiVectorStore.from_padded(padded, mask, "fp32")
    b = MultiVectorStore.from_sequences(docs, "fp32")
    assert torch.equal(a.codes, b.codes) and torch.equal(a.offsets, b.offsets)


def test_fp16_round_trip_error_is_within_half_precision(docs):
    store = MultiVectorStore.from_sequences(docs, "fp16")
    original = torch.cat(docs)
    gathered, _ = store.gather()
    flat = store.decode(store.codes)
    # fp16 has a 10-bit mantissa: relative rounding error at most 2^-11 per entry
    assert ((flat - original).abs() <= original.abs() * 2**-11 + 1e-7).all()
    assert store.codes.dtype == torch.float16 and store.codes.shape == original.shape
    assert gathered.dtype == torch.float32


def test_fp16_store_gives_the_same_maxsim_ranking(docs):
    g = torch.Generator().manual_seed(3)
    queries = torch.nn.functional.normalize(torch.randn(8, 6, 32, generator=g), dim=-1)
    query_mask = torch.ones(8, 6)
    exact = maxsim(queries, query_mask, *MultiVectorStore.from_sequences(docs, "fp32").gather())
    half = maxsim(queries, query_mask, *MultiVectorStore.from_sequences(docs, "fp16").gather())
    torch.testing.assert_close(half, exact, rtol=0, atol=6 * 2**-11)


def test_pq_reconstructs_clustered_vectors_closely_and_is_much_smaller(docs, tmp_path):
    original = torch.cat(docs)  # [T, 32] unit vectors
    fp32 = MultiVectorStore.from_sequences(docs, "fp32")
    pq = MultiVectorStore.from_sequences(docs, "pq", pq_subquantizers=8, pq_bits=6)
    assert pq.codes.dtype == torch.uint8 and pq.codes.shape == (original.shape[0], 6)  # 8 codes x 6 bits = 6 bytes
    error = (pq.decode(pq.codes) - original).pow(2).sum(1).mean()
    assert error < 0.1 * original.pow(2).sum(1).mean()  # under 10% of the energy (unit vectors: energy 1)
    # and far below a random codebook's error: PQ must actually have learnt the clusters
    noise_error = (torch.nn.functional.normalize(torch.randn_like(original), dim=-1) - original).pow(2).sum(1).mean()
    assert error < 0.1 * noise_error
    fp32_bytes, pq_bytes = fp32.save(tmp_path / "fp32.st"), pq.save(tmp_path / "pq.st")
    fp16_bytes = MultiVectorStore.from_sequences(docs, "fp16").save(tmp_path / "fp16.st")
    assert fp16_bytes < 0.55 * fp32_bytes
    # T x 6 bytes of codes plus the 8 x 64 x 4 float codebook, against T x 128 bytes of fp32
    assert pq_bytes < 0.25 * fp32_bytes


@pytest.mark.parametrize("codec", ["fp32", "fp16", "pq"])
def test_load_of_save_is_the_same_store(docs, codec, tmp_path):
    settings = {"pq_subquantizers": 4, "pq_bits": 4} if codec == "pq" else {}
    store = MultiVectorStore.from_sequences(docs, codec, **settings)
    path = tmp_path / f"{codec}.st"
    size = store.save(path)
    assert size == os.path.getsize(path) == store.bytes_on_disk()
    loaded = MultiVectorStore.load(path)
    assert loaded.codec == codec and loaded.dim == 32 and loaded.bytes_on_disk() == size
    assert torch.equal(loaded.codes, store.codes) and torch.equal(loaded.offsets, store.offsets)
    for before, after in zip(store.gather([3, 1, 40]), loaded.gather([3, 1, 40]), strict=True):
        assert torch.equal(before, after)


def test_one_dimensional_vectors(tmp_path):
    # ColBERTer's 1-dimensional variant: each token is a single (signed) weight
    docs = [torch.tensor([[0.5], [-1.0]]), torch.tensor([[2.0]])]
    store = MultiVectorStore.from_sequences(docs, "fp16")
    store.save(tmp_path / "one.st")
    vectors, mask = MultiVectorStore.load(tmp_path / "one.st").gather()
    assert vectors.tolist() == [[[0.5], [-1.0]], [[2.0], [0.0]]] and mask.tolist() == [[True, True], [True, False]]
    assert maxsim(torch.tensor([[[1.0]]]), torch.ones(1, 1), vectors, mask).tolist() == [[0.5, 2.0]]


def test_failed_write_leaves_no_partial_file(docs, tmp_path, monkeypatch):
    path = tmp_path / "store.st"
    MultiVectorStore.from_sequences(docs[:3], "fp16").save(path)
    original = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        MultiVectorStore.from_sequences(docs, "fp32").save(path)
    assert path.read_bytes() == original and [p.name for p in tmp_path.iterdir()] == ["store.st"]


def test_bad_inputs(docs, tmp_path):
    with pytest.raises(ConfigError, match="fp32, fp16, pq"):
        MultiVectorStore.from_sequences(docs, "int8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must divide"):
        MultiVectorStore.from_sequences(docs, "pq", pq_subquantizers=5)
    with pytest.raises(ConfigError, match="at least as many vectors"):
        MultiVectorStore.from_sequences(docs[:2], "pq", pq_bits=12)
    with pytest.raises(ConfigError, match="sum to"):
        MultiVectorStore.build(torch.zeros(5, 4), [2, 2])
    store = MultiVectorStore.from_sequences(docs, "fp16")
    with pytest.raises(ConfigError, match="in \\[0, 60\\)"):
        store.gather([60])
    with pytest.raises(ConfigError, match="not been saved"):
        store.bytes_on_disk()
    path = tmp_path / "store.st"
    store.save(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        MultiVectorStore.load(path)
