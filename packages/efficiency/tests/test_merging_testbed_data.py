"""Merging testbed data: shapes, dtypes, label ranges, determinism, disjoint splits, missing files named."""

import numpy as np
import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError, DataError
from paperzoo.efficiency.merging.testbed import data
from paperzoo.efficiency.merging.testbed.data import (
    SPLITS,
    TEXT_CORPORA,
    VISION_TASKS,
    load_corpus,
    load_pretrain,
    load_task,
    num_classes,
)


@pytest.fixture(autouse=True)
def one_thread():  # noqa: ANN201 - a generator fixture
    with torch_threads(1):
        yield


EXPECTED_CLASSES = {
    "fmnist_tops": 4,
    "fmnist_footwear": 3,
    "sklearn_digits": 10,
    "opencv_digits": 10,
    "textures": 3,
    "lfw_faces": 2,
}


def test_every_task_split_has_the_contract_shapes_dtypes_and_labels() -> None:
    assert len(VISION_TASKS) >= 6 and set(VISION_TASKS) == set(EXPECTED_CLASSES)
    for task in VISION_TASKS:
        assert num_classes(task) == EXPECTED_CLASSES[task]
        sizes = {}
        for split in SPLITS:
            x, y = load_task(task, split)
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.ndim == 4 and x.shape[1:] == (1, 28, 28) and y.shape == (len(x),)
            assert torch.isfinite(x).all()
            assert int(y.min()) >= 0 and int(y.max()) < num_classes(task)
            sizes[split] = len(x)
            if split == "train":
                # Standardized with the train split's own statistics.
                assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
                assert set(y.tolist()) == set(range(num_classes(task))), f"{task} misses a class in train"
        assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    assert {split: len(load_task("fmnist_tops", split)[0]) for split in SPLITS} == {
        "train": 21600,  # 4 classes x 6,000 official training images, minus a 10% validation holdout
        "val": 2400,
        "test": 4000,  # 4 classes x 1,000 official test images
    }
    assert [len(load_task("opencv_digits", s)[0]) for s in SPLITS] == [3000, 1000, 1000]
    assert [len(load_task("lfw_faces", s)[0]) for s in SPLITS] == [120, 40, 40]


def test_loading_is_deterministic_across_cache_clears_and_returns_fresh_tensors() -> None:
    for task in ("sklearn_digits", "textures", "lfw_faces"):
        x1, y1 = load_task(task, "train")
        x1.zero_()  # a caller modifying its copy must not change what the next caller gets
        data._load_task_cached.cache_clear()
        data._raw_cached.cache_clear()
        x2, y2 = load_task(task, "train")
        x3, y3 = load_task(task, "train")
        assert torch.equal(x2, x3) and torch.equal(y1, y2) and torch.equal(y2, y3)
        assert float(x2.abs().sum()) > 0


def test_pretraining_data_uses_only_classes_no_expert_uses() -> None:
    assert set(data.PRETRAIN_CLASSES).isdisjoint(data.TOPS_CLASSES + data.FOOTWEAR_CLASSES)
    assert sorted(data.PRETRAIN_CLASSES + data.TOPS_CLASSES + data.FOOTWEAR_CLASSES) == list(range(10))
    x, y = load_pretrain("val")
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
    assert set(y.tolist()) == set(range(12))
    quarter = len(x) // 4
    # label = 4 * class + k, the image rotated by k * 90 degrees.
    torch.testing.assert_close(x[quarter : 2 * quarter], torch.rot90(x[:quarter], 1, dims=(2, 3)))
    assert torch.equal(y[quarter : 2 * quarter], y[:quarter] + 1)


def _tagged_fashion(directory, part):  # noqa: ANN001, ANN202 - stands in for the lru-cached reader
    """Fake Fashion-MNIST: pixel [0, 0] of image i holds its index, so splits can be compared by identity."""
    n = 250 if part == "train" else 100
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n)
    return images, np.arange(n) % 10


def test_fashion_splits_are_disjoint_and_cover_the_class_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_fashion_mnist", _tagged_fashion)
    ids = {}
    for split in SPLITS:
        images, labels = data._fashion_split(data.TOPS_CLASSES, split)
        ids[split] = set(np.rint(images[:, 0, 0] * 255).astype(int).tolist())
        assert set(labels.tolist()) == {0, 1, 2, 3}
    assert ids["train"].isdisjoint(ids["val"])
    assert ids["train"] | ids["val"] == {i for i in range(250) if i % 10 in data.TOPS_CLASSES}
    assert ids["test"] == {i for i in range(100) if i % 10 in data.TOPS_CLASSES}  # ids of the official test set


def test_permutation_splits_partition_the_examples() -> None:
    images = np.arange(500, dtype=np.float32)[:, None, None]
    labels = np.arange(500) % 2
    for stratify in (False, True):
        parts = [data._permutation_split(images, labels, s, stratify)[0].ravel().tolist() for s in SPLITS]
        assert sorted(sum(parts, [])) == list(range(500))
        assert [len(p) for p in parts] == [300, 100, 100]


def test_texture_splits_come_from_disjoint_image_regions() -> None:
    bounds = [data.TEXTURE_ROWS[s] for s in SPLITS]
    for (_, stop), (start, _) in zip(bounds, bounds[1:], strict=False):
        assert stop <= start  # a 28-row patch starting below `stop - 28` never crosses into the next region
    train = {p.tobytes() for p in data._textures("train")[0]}
    test = {p.tobytes() for p in data._textures("test")[0]}
    assert train.isdisjoint(test)


def test_text_corpora_are_byte_tokens_split_by_document(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_documents(corpus, sources):  # noqa: ANN001, ANN202
        return [f"<{corpus}-{i:03d}>" + "x" * 50 for i in range(100)]

    monkeypatch.setattr(data, "_corpus_documents", fake_documents)
    data._load_corpus_cached.cache_clear()
    try:
        seen: dict[str, set[str]] = {}
        for split in SPLITS:
            tokens = load_corpus("wordnet", split)
            assert tokens.dtype == torch.int64 and int(tokens.max()) == 256 and int(tokens.min()) >= 0
            text = bytes(t for t in tokens.tolist() if t < 256).decode()
            seen[split] = {text[i : i + 13] for i in range(0, len(text), 63)}
            assert int((tokens == 256).sum()) == len(seen[split])  # one end-of-document token per document
        assert [len(seen[s]) for s in SPLITS] == [80, 10, 10]
        assert seen["train"].isdisjoint(seen["val"]) and seen["train"].isdisjoint(seen["test"])
        assert seen["val"].isdisjoint(seen["test"])
    finally:
        data._load_corpus_cached.cache_clear()


def test_real_wordnet_and_stdlib_corpora() -> None:
    glosses = data.wordnet_glosses()
    assert len(glosses) > 2000  # 117k synsets in documents of 50
    assert glosses[0].startswith("entity: that which is perceived or known")
    for corpus in ("wordnet", "stdlib"):
        train, test = load_corpus(corpus, "train"), load_corpus(corpus, "test")
        assert train.dtype == torch.int64 and int(train.min()) >= 0 and int(train.max()) <= 256
        assert len(train) > 8 * len(test) / 2 and len(train) + len(test) <= data.CORPUS_BYTES * 1.2
        assert torch.equal(test, load_corpus(corpus, "test"))
    assert TEXT_CORPORA == ("wikipedia", "stdlib", "wordnet")


@pytest.mark.parametrize(
    ("attribute", "task", "name"),
    [
        ("FASHION_MNIST_DIR", "fmnist_tops", "train-images-idx3-ubyte.gz"),
        ("OPENCV_DIGITS", "opencv_digits", "nowhere.png"),
    ],
)
def test_a_missing_data_file_is_a_data_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path, attribute: str, task: str, name: str
) -> None:  # noqa: ANN001
    monkeypatch.setattr(data, attribute, tmp_path / "nowhere.png" if attribute == "OPENCV_DIGITS" else tmp_path)
    with pytest.raises(DataError, match=name):
        load_task(task, "train")


def test_a_missing_wordnet_file_is_a_data_error_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setattr(data, "WORDNET_DIR", tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "data.noun")):
        load_corpus("wordnet", "train")


def test_bad_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown vision task 'mnist'"):
        load_task("mnist", "train")
    with pytest.raises(ConfigError, match="split must be one of"):
        load_task("textures", "dev")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown corpus 'c4'"):
        load_corpus("c4", "train")
