"""LRA Pathfinder: a positive's markers are joined by lit pixels (flood fill, steps of at most the dash gap) and a
negative's are not; labels balanced; deterministic; no image shared across splits; the release layout loader."""

from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.efficiency.sequence.lra.pathfinder import (
    PathfinderDataModule,
    PathXDataModule,
    generate_pathfinder,
    pathfinder_geometry,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lra" / "pathfinder32" / "curv_contour_length_14"


def flood_connected(image: np.ndarray, start: tuple[int, int], goal: tuple[int, int], step: int) -> bool:
    """Breadth-first search over lit pixels, moving at most `step` pixels per axis; (x, y) positions."""
    lit = image > 0
    h, w = lit.shape
    seen = np.zeros_like(lit)
    queue = deque([(start[1], start[0])])
    seen[start[1], start[0]] = True
    while queue:
        y, x = queue.popleft()
        if (x, y) == goal:
            return True
        for dy in range(-step, step + 1):
            for dx in range(-step, step + 1):
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and lit[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return False


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


@pytest.mark.parametrize("resolution", [32, 64])
def test_labels_match_connectivity(resolution):
    images, labels, markers = generate_pathfinder(40, resolution=resolution, seed=3)
    step = int(pathfinder_geometry(resolution)["bridge"])
    assert images.shape == (40, resolution, resolution) and images.dtype == np.uint8
    assert labels.sum() == 20  # exactly balanced
    for image, label, (a, b) in zip(images, labels, markers, strict=True):
        a_px, b_px = tuple(np.floor(a).astype(int)), tuple(np.floor(b).astype(int))
        assert image[a_px[1], a_px[0]] and image[b_px[1], b_px[0]]  # markers are drawn
        assert flood_connected(image, a_px, b_px, step) == bool(label)
        # a negative's markers are not joined even with a more generous step
        if not label:
            assert not flood_connected(image, a_px, b_px, step + 1)


def test_markers_distance_does_not_give_the_label_away():
    _, labels, markers = generate_pathfinder(400, seed=1)
    distance = np.linalg.norm(markers[:, 0] - markers[:, 1], axis=-1)
    pos, neg = distance[labels == 1].mean(), distance[labels == 0].mean()
    assert abs(pos - neg) < 0.2 * pos


def test_deterministic_and_seeded():
    a = generate_pathfinder(16, seed=5)
    b = generate_pathfinder(16, seed=5)
    c = generate_pathfinder(16, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_datamodule_splits(cache):
    dm = PathfinderDataModule(num_train=64, num_val=16, num_test=16, batch_size=8)
    assert (dm.vocab_size, dm.num_classes, dm.seq_len) == (257, 2, 1024)
    dm.setup()
    splits = dm.cached_build()
    rows: set[bytes] = set()
    for name, size in (("train", 64), ("val", 16), ("test", 16)):
        tokens, labels = splits[name]["tokens"], splits[name]["label"]
        assert tokens.shape == (size, 1024) and int(labels.sum()) == size // 2
        assert set(tokens.unique().tolist()) <= {1, 256}  # grey 0 / 255, shifted by one; no padding
        mine = {r.numpy().tobytes() for r in tokens}
        assert len(mine) == size and not mine & rows  # no image repeats, within or across splits
        rows |= mine
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (8, 1024) and bool(batch["mask"].all())
    assert PathXDataModule(num_train=2, num_val=2, num_test=2).seq_len == 128 * 128


def test_release_layout_loader(cache):
    dm = PathfinderDataModule(path=str(FIXTURES), split_fractions=(0.5, 0.25))
    splits = dm.build()
    total = sum(len(s["label"]) for s in splits.values())
    assert total == 8 and len(splits["train"]["label"]) == 4
    tokens = torch.cat([s["tokens"] for s in splits.values()])
    labels = torch.cat([s["label"] for s in splits.values()])
    assert tokens.shape == (8, 1024) and sorted(labels.tolist()) == [0] * 4 + [1] * 4
    # every listed PNG arrives with its metadata label (read here independently with PIL)
    expected = {}
    for meta in sorted((FIXTURES / "metadata").glob("*.npy")):
        for line in meta.read_text().splitlines():
            subdir, name, _, label = line.split()[:4]
            pixels = np.asarray(Image.open(FIXTURES / subdir / name).convert("L"), dtype=np.int64)
            expected[(pixels.reshape(-1) + 1).tobytes()] = int(label)
    assert {row.numpy().tobytes(): int(label) for row, label in zip(tokens, labels, strict=True)} == expected


def test_bad_inputs_are_named(cache, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        PathfinderDataModule(path=str(tmp_path / "nowhere")).build()
    (tmp_path / "metadata").mkdir()
    with pytest.raises(DataError, match="metadata files"):
        PathfinderDataModule(path=str(tmp_path)).build()
    (tmp_path / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0 1\n")
    with pytest.raises(DataError, match="sample_0.png"):
        PathfinderDataModule(path=str(tmp_path)).build()
    with pytest.raises(ConfigError, match="split_fractions"):
        PathfinderDataModule(split_fractions=(0.9, 0.2))
