"""LRA sequential image classification: an image read pixel by pixel, one grey level per token.

Long Range Arena, Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006,
https://arxiv.org/abs/2011.04006. LRA's "Image" task flattens 32x32 grey-scale CIFAR-10 images into 1024-token
sequences of 8-bit intensities (no 2D prior); the model classifies the sequence.

What is implemented: the same reading of Fashion-MNIST (the IDX files of the Debian `dataset-fashion-mnist` package
in /usr/share/datasets/fashion-mnist/): 28x28 images as 784-token sequences, row-major, token = grey level + 1
(0 is padding; vocab 257), 10 classes. `downsample=k` average-pools k x k blocks first (28 / k must be whole), a
CPU-sized variant with (28 / k)^2 tokens. Train and val are disjoint seeded subsets of the 60k training images, test
a seeded subset of the 10k test images.

`path=`: a directory in the standard MNIST / Fashion-MNIST layout (`train-images-idx3-ubyte`,
`train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`).

Deviations: Fashion-MNIST (10 classes, 784 pixels) replaces grey-scale CIFAR-10 (10 classes, 1024 pixels), which
is not available offline.
"""

import gzip
from pathlib import Path

import numpy as np
import torch

from paperzoo.core.errors import DataError, require
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule, Split

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path, images: bool) -> np.ndarray:
    """An IDX file (gzip or raw): images [N, rows, cols] uint8 (magic 2051, data at byte 16) or labels [N] uint8
    (magic 2049, data at byte 8). Raises `DataError` naming the file when it is missing, foreign or truncated."""
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot decompress {path}: {err}") from err
    header = 16 if images else 8
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    magic, count = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big")
    expected_magic = 2051 if images else 2049
    if magic != expected_magic:
        raise DataError(f"{path} is not an IDX {'image' if images else 'label'} file (magic {magic})")
    shape = (count, int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")) if images else (count,)
    size = int(np.prod(shape))
    if len(raw) - header < size:
        raise DataError(f"{path} is truncated: {len(raw) - header} data bytes for shape {shape} ({size} expected)")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(shape)


def find_idx(root: Path, name: str) -> Path:
    """`root/name`, or `root/name.gz` when only that exists."""
    plain, packed = root / name, root / f"{name}.gz"
    return plain if plain.is_file() or not packed.is_file() else packed


class SequentialImageDataModule(SequenceDataModule):
    """Fashion-MNIST (or an MNIST-layout directory) as pixel sequences (LRA Image); see the module docstring.

    Args:
        num_train, num_val: images drawn from the training file (disjoint); num_test from the test file.
        downsample: average-pool factor (1 = the full 784 tokens; 2 = 196; 4 = 49).
        path: a directory with the four IDX files (default: the installed Fashion-MNIST).
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    def __init__(
        self,
        num_train: int = 5000,
        num_val: int = 1000,
        num_test: int = 1000,
        downsample: int = 1,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        require(min(num_train, num_val, num_test) > 0, "num_train, num_val and num_test must be positive")
        require(downsample >= 1 and 28 % downsample == 0, f"downsample must divide 28, got {downsample}")
        side = 28 // downsample
        self.vocab_size, self.num_classes, self.seq_len = 257, 10, side * side

    def build(self) -> dict[str, Split]:
        hp = self.hparams
        root = self.check_path_exists() if self.path is not None else Path(FASHION_MNIST)
        data = {key: read_idx(find_idx(root, name), images=key[1] == "images") for key, name in FILES.items()}
        for part in ("train", "test"):
            if len(data[(part, "images")]) != len(data[(part, "labels")]):
                raise DataError(f"{root}: {part} images and labels differ in count")
            if data[(part, "images")].shape[1:] != (28, 28):
                raise DataError(f"{root}: {part} images are {data[(part, 'images')].shape[1:]}, expected 28x28")
        rng = np.random.default_rng(hp.seed)
        n_train_file = len(data[("train", "labels")])
        if hp.num_train + hp.num_val > n_train_file or hp.num_test > len(data[("test", "labels")]):
            raise DataError(
                f"{root} holds too few images for {hp.num_train}+{hp.num_val} train/val, {hp.num_test} test"
            )
        order = rng.permutation(n_train_file)
        test_order = rng.permutation(len(data[("test", "labels")]))[: hp.num_test]
        picks = {
            "train": ("train", order[: hp.num_train]),
            "val": ("train", order[hp.num_train : hp.num_train + hp.num_val]),
            "test": ("test", test_order),
        }
        return {
            split: self._encode(data[(part, "images")][idx], data[(part, "labels")][idx])
            for split, (part, idx) in picks.items()
        }

    def _encode(self, images: np.ndarray, labels: np.ndarray) -> Split:
        """images [N, 28, 28] uint8 -> tokens [N, (28 / k)^2] (rounded block means + 1), labels [N]."""
        k = self.hparams.downsample
        if k > 1:
            n, side = len(images), 28 // k
            images = np.rint(images.reshape(n, side, k, side, k).astype(np.float64).mean((2, 4))).astype(np.uint8)
        tokens = torch.from_numpy(images.reshape(len(images), -1).astype(np.int64) + 1)
        if labels.max(initial=0) > 9:
            raise DataError(f"labels must be 0-9, found {int(labels.max())}")
        return {"tokens": tokens, "label": torch.from_numpy(labels.astype(np.int64))}
