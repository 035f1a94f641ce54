"""DenseIndex (faiss flat / IVF / HNSW) against torch brute force, and its atomic save/load."""

import os

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.retrieval.index.dense import DenseIndex, default_nlist


def clustered(count: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> torch.Tensor:
    """Unit vectors around random cluster centres: the shape real embeddings have, unlike isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    points = centres[torch.randint(clusters, (count,), generator=g)] + 0.4 * torch.randn(count, dim, generator=g)
    return torch.nn.functional.normalize(points, dim=-1)


@pytest.fixture(scope="module")
def corpus() -> tuple[torch.Tensor, torch.Tensor]:
    points = clustered(2050, seed=0)
    return points[:2000], points[2000:]  # documents [2000, 32], queries [50, 32]


def recall_at(found: torch.Tensor, exact: torch.Tensor) -> float:
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return hits / exact.numel()


def test_flat_equals_torch_brute_force(corpus):
    docs, queries = corpus
    scores, indices = DenseIndex.build(docs, "flat").search(queries, 10)
    reference = queries @ docs.T  # [Q, N]
    expected_scores, expected_indices = reference.topk(10, dim=1)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-5)
    # the scores are the inner products of the returned ids, not just sorted numbers
    torch.testing.assert_close(scores, reference.gather(1, indices), rtol=0, atol=1e-5)


def test_normalize_gives_cosine_similarity():
    g = torch.Generator().manual_seed(1)
    docs, queries = torch.randn(100, 8, generator=g) * 5, torch.randn(4, 8, generator=g) * 3
    scores, indices = DenseIndex.build(docs, "flat", normalize=True).search(queries, 5)
    cosine = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(docs, dim=-1).T
    expected_scores, expected_indices = cosine.topk(5, dim=1)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("kind", "settings", "minimum"), [("ivf", {"nprobe": 8}, 0.9), ("hnsw", {}, 0.95)])
def test_approximate_kinds_recall_the_exact_neighbours(corpus, kind, settings, minimum):
    docs, queries = corpus
    _, exact = DenseIndex.build(docs, "flat").search(queries, 10)
    _, found = DenseIndex.build(docs, kind, **settings).search(queries, 10)
    assert recall_at(found, exact) >= minimum


def test_ivf_probing_every_list_is_exact(corpus):
    docs, queries = corpus
    index = DenseIndex.build(docs, "ivf", nlist=16, nprobe=16)
    assert index.nlist == 16 and DenseIndex.build(docs, "ivf").nlist == default_nlist(2000)
    _, exact = DenseIndex.build(docs, "flat").search(queries, 10)
    assert torch.equal(index.search(queries, 10)[1], exact)


def test_k_larger_than_the_index_is_cut_and_score_matrix_marks_the_rest():
    docs = torch.eye(4)
    index = DenseIndex.build(docs, "flat")
    scores, indices = index.search(torch.tensor([[0.0, 1.0, 0.5, 0.0]]), 10)
    assert indices.shape == (1, 4) and indices[0, :2].tolist() == [1, 2]
    matrix = index.score_matrix(torch.tensor([[0.0, 1.0, 0.5, 0.0]]), 2)
    assert matrix.tolist() == [[float("-inf"), 1.0, 0.5, float("-inf")]]


def test_add_appends_ids(corpus):
    docs, queries = corpus
    index = DenseIndex(32, "hnsw")
    index.add(docs[:1000])
    index.add(docs[1000:])
    assert len(index) == 2000
    flat = DenseIndex.build(docs, "flat")
    assert recall_at(index.search(queries, 10)[1], flat.search(queries, 10)[1]) >= 0.95


def test_bad_settings_are_config_errors(corpus):
    docs, _ = corpus
    with pytest.raises(ConfigError, match="flat, ivf, hnsw"):
        DenseIndex(32, "annoy")  # type: ignore[arg-type]
    index = DenseIndex.build(docs, "flat")
    with pytest.raises(ConfigError, match="dimension 16"):
        index.search(torch.randn(3, 16), 5)
    with pytest.raises(ConfigError, match="dimension 16"):
        index.add(torch.randn(3, 16))
    with pytest.raises(ConfigError, match="k must be"):
        index.search(docs[:2], 0)
    with pytest.raises(ConfigError, match="NaN"):
        index.search(torch.full((1, 32), float("nan")), 5)
    with pytest.raises(ConfigError, match="nlist=100"):
        DenseIndex.build(docs[:50], "ivf", nlist=100)
    with pytest.raises(ConfigError, match="empty"):
        DenseIndex(32).search(docs[:1], 1)
    assert default_nlist(2000) == 51 and default_nlist(10) == 1


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(corpus, kind, tmp_path):
    docs, queries = corpus
    index = DenseIndex.build(docs, kind, normalize=True, nprobe=4, ef_search=40)
    path = tmp_path / f"{kind}.index"
    size = index.save(path)
    assert size == os.path.getsize(path) == index.bytes_on_disk() > docs.numel() * 4
    loaded = DenseIndex.load(path)
    assert (loaded.kind, loaded.normalize, loaded.nprobe, loaded.ef_search, len(loaded)) == (kind, True, 4, 40, 2000)
    assert loaded.bytes_on_disk() == size
    for before, after in zip(index.search(queries * 3, 10), loaded.search(queries * 3, 10), strict=True):
        assert torch.equal(before, after)


def test_failed_write_leaves_no_partial_file(corpus, tmp_path, monkeypatch):
    docs, _ = corpus
    path = tmp_path / "index.st"
    DenseIndex.build(docs[:10], "flat").save(path)
    original = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # fails after the bytes went into the temporary file
    with pytest.raises(OSError, match="disk full"):
        DenseIndex.build(docs, "flat").save(path)
    with pytest.raises(OSError, match="disk full"):
        DenseIndex.build(docs, "flat").save(tmp_path / "new.st")
    assert path.read_bytes() == original  # the old index is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.st"]  # no temporary or new file left


def test_truncated_or_missing_file_is_a_data_error(corpus, tmp_path):
    docs, _ = corpus
    path = tmp_path / "index.st"
    DenseIndex.build(docs[:100], "hnsw").save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        DenseIndex.load(path)
    with pytest.raises(DataError, match="does not exist"):
        DenseIndex.load(tmp_path / "missing.st")
