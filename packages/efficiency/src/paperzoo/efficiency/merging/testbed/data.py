"""Data of the merging testbed: six small image-classification tasks and three byte-level text corpora, all offline.

Vision (every input 1x28x28 float32, standardized by the task's own train-split mean and std; /work/shared/DATA.md):

| task | classes | source | licence |
|---|---|---|---|
| `fmnist_tops` | T-shirt, Pullover, Coat, Shirt | Fashion-MNIST (Debian `dataset-fashion-mnist`, IDX gz) | MIT |
| `fmnist_footwear` | Sandal, Sneaker, Ankle boot | Fashion-MNIST | MIT |
| `sklearn_digits` | 0-9 | scikit-learn's bundled `digits.csv.gz` (UCI optdigits, 8x8, 1,797) | BSD-3 / CC BY 4.0 |
| `opencv_digits` | 0-9 | Debian `opencv-doc` `examples/data/digits.png` (5,000 cells of 20x20) | Apache-2.0 |
| `textures` | brick, grass, gravel | scikit-image's bundled `brick/grass/gravel.png` (512x512) | CC0 |
| `lfw_faces` | non-face, face | scikit-image's `lfw_subset.npy` (100 faces + 100 non-faces, 25x25) | see below |

Textures: CC0 originals (CC0Textures Bricks25 and Gravel04, DeviantArt "Grass 01"), as scikit-image's docstrings
say. LFW crops: faces from Labeled Faces in the Wild and non-faces from its backgrounds; LFW states no licence
(research data), the file ships in scikit-image's BSD-3 wheel. Each is read from the installed package, never
copied into this repository.

The base backbone is pretrained on the Fashion-MNIST classes no expert task uses, Trouser, Dress and Bag
(`PRETRAIN_CLASSES`), as a 12-way "class x rotation by k*90 degrees" problem (`load_pretrain`): three classes alone
make too poor a feature extractor, and the rotation labels add a self-supervised signal on the same images.

Sizes: digits are drawn MNIST-style: sklearn's 8x8 grid (values 0..16) is scaled to [0, 1], upsampled bilinearly
to 20x20 and padded by 4 zero pixels on every side; opencv's 20x20 cells (0..255) are scaled to [0, 1] and padded
the same way. The LFW crops (25x25) are upsampled bilinearly to 28x28. Texture patches are 28x28 crops at native
resolution.

Splits (train / val / test, disjoint, deterministic): Fashion-MNIST test = the official test set, val = a seeded 10%
of the official training set; sklearn and opencv digits and LFW: a seeded 60/20/20 permutation (stratified for
LFW); textures: by image region, rows [0, 320) train, [320, 416) val, [416, 512) test, so no pixel of a test patch
was ever seen in training (patches at seeded random positions inside each region: 800 / 200 / 200 per image).

Text (`TEXT_CORPORA`; byte tokens of core's `ByteTokenizer`, documents separated by its end-of-document token 256):
`wikipedia` = the 106-article Wikipedia sample in gensim's test data through core's `wikipedia_sample` (CC BY-SA;
gensim itself LGPL, used as a data provider); `stdlib` = this Python's standard library sources through core's
`stdlib_sources` (PSF licence); `wordnet` = WordNet 3.0 glosses as "lemma: gloss" lines read from the Debian
`wordnet` package's `/usr/share/wordnet/data.{noun,verb,adj,adv}` (WordNet licence, BSD-like), grouped into
documents of 50 consecutive synsets. Each corpus is split 80/10/10 by document from a seeded permutation and
capped at `CORPUS_BYTES` bytes (documents taken in permuted order), so the three corpora weigh about the same.
"""

import functools
import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from paperzoo.core.errors import ConfigError, DataError

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

VISION_TASKS: tuple[str, ...] = (
    "fmnist_tops",
    "fmnist_footwear",
    "sklearn_digits",
    "opencv_digits",
    "textures",
    "lfw_faces",
)
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
TOPS_CLASSES = (0, 2, 4, 6)  # T-shirt, Pullover, Coat, Shirt
FOOTWEAR_CLASSES = (5, 7, 9)  # Sandal, Sneaker, Ankle boot
PRETRAIN_CLASSES = (1, 3, 8)  # Trouser, Dress, Bag: used by no expert task
TEXTURES = ("brick", "grass", "gravel")
TEXT_CORPORA: tuple[str, ...] = ("wikipedia", "stdlib", "wordnet")
CORPUS_BYTES = 3_000_000
SEED = 20240601  # fixes every split and patch position

# Where the data live; module-level so a test can point one at a missing file.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
OPENCV_DIGITS = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
WORDNET_DIR = Path("/usr/share/wordnet")

_NUM_CLASSES = {
    "fmnist_tops": len(TOPS_CLASSES),
    "fmnist_footwear": len(FOOTWEAR_CLASSES),
    "sklearn_digits": 10,
    "opencv_digits": 10,
    "textures": len(TEXTURES),
    "lfw_faces": 2,
}
PRETRAIN_NUM_CLASSES = 4 * len(PRETRAIN_CLASSES)


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataError(f"the merging testbed needs the {package} package for its data, and it is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"the {what} data file {path} does not exist")
    return path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")


def _check_task(task: str) -> None:
    if task not in _NUM_CLASSES:
        raise ConfigError(f"unknown vision task {task!r}; expected one of {VISION_TASKS}")


def num_classes(task: str) -> int:
    """Number of classes of a vision task."""
    _check_task(task)
    return _NUM_CLASSES[task]


# --- raw sources (numpy, float32 in [0, 1], [N, 28, 28]) -------------------------------------------------------
def _read_idx(path: Path, offset: int) -> np.ndarray:
    _require_file(path, "Fashion-MNIST")
    try:
        with gzip.open(path, "rb") as handle:
            return np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)
    except (OSError, EOFError) as err:
        raise DataError(f"the Fashion-MNIST file {path} is truncated or corrupt ({err})") from err


@functools.lru_cache(maxsize=4)
def _fashion_mnist(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N] int64) of the official "train" or "t10k" set."""
    images = _read_idx(directory / f"{part}-images-idx3-ubyte.gz", 16)
    labels = _read_idx(directory / f"{part}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    if images.size != labels.size * 784:
        raise DataError(f"{directory}/{part}-images-idx3-ubyte.gz holds {images.size} bytes, not 784 per label")
    return images.reshape(-1, 28, 28), labels


def _fashion_split(classes: tuple[int, ...], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images of `classes`, labels renumbered 0..len(classes)-1 in the order given."""
    if split == "test":
        images, labels = _fashion_mnist(FASHION_MNIST_DIR, "t10k")
        index = np.flatnonzero(np.isin(labels, classes))
    else:
        images, labels = _fashion_mnist(FASHION_MNIST_DIR, "train")
        pool = np.flatnonzero(np.isin(labels, classes))
        pool = pool[np.random.default_rng(SEED).permutation(len(pool))]
        n_val = len(pool) // 10
        index = np.sort(pool[:n_val] if split == "val" else pool[n_val:])
    remap = np.full(10, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    return images[index].astype(np.float32) / 255.0, remap[labels[index]]


def _pad_digits(images: np.ndarray) -> np.ndarray:
    """[N, 20, 20] -> [N, 28, 28], 4 zero pixels on every side (MNIST's layout)."""
    return np.pad(images, ((0, 0), (4, 4), (4, 4)))


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize [N, H, W] -> [N, size, size] (torch, align_corners=False, no antialias)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    path = _require_file(_package_file("sklearn", "datasets", "data", "digits.csv.gz"), "scikit-learn digits")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 65:
        raise DataError(f"{path} should hold rows of 64 pixels and a label, got shape {table.shape}")
    images = table[:, :64].reshape(-1, 8, 8) / 16.0
    return _pad_digits(_resize(images, 20)), table[:, 64].astype(np.int64)


def _opencv_digits() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    path = _require_file(OPENCV_DIGITS, "opencv-doc digits")
    sheet = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0  # [1000, 2000]
    if sheet.shape != (1000, 2000):
        raise DataError(f"{path} should be a 2000x1000 sheet of 20x20 digits, got {sheet.shape[::-1]}")
    cells = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)  # row-major cells
    labels = np.repeat(np.arange(10), 500)  # every 5 rows of 100 cells is one digit
    return _pad_digits(cells), labels.astype(np.int64)


def _lfw() -> tuple[np.ndarray, np.ndarray]:
    path = _require_file(_package_file("skimage", "data", "lfw_subset.npy"), "scikit-image lfw_subset")
    faces = np.load(path).astype(np.float32)  # [200, 25, 25]: 100 faces, then 100 non-faces
    if faces.shape != (200, 25, 25):
        raise DataError(f"{path} should hold 200 images of 25x25, got {faces.shape}")
    labels = np.concatenate([np.ones(100), np.zeros(100)]).astype(np.int64)  # 1 = face
    return _resize(faces, 28), labels


def _permutation_split(
    images: np.ndarray, labels: np.ndarray, split: str, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 60/20/20 split (per class when `stratify`)."""
    rng = np.random.default_rng(SEED)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(len(labels))]
    chosen = []
    for group in groups:
        group = group[rng.permutation(len(group))]
        n_train, n_val = int(0.6 * len(group)), int(0.2 * len(group))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(group))}
        start, stop = bounds[split]
        chosen.append(group[start:stop])
    index = np.sort(np.concatenate(chosen))
    return images[index], labels[index]


TEXTURE_ROWS = {"train": (0, 320), "val": (320, 416), "test": (416, 512)}
TEXTURE_PATCHES = {"train": 800, "val": 200, "test": 200}


def _textures(split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    rng = np.random.default_rng([SEED, SPLITS.index(split)])
    row_start, row_stop = TEXTURE_ROWS[split]
    patches: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(TEXTURES):
        path = _require_file(_package_file("skimage", "data", f"{name}.png"), f"scikit-image {name}")
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        if image.shape[0] < row_stop or image.shape[1] < 28:
            raise DataError(f"{path} should be at least 28x{row_stop} pixels, got {image.shape[::-1]}")
        count = TEXTURE_PATCHES[split]
        rows = rng.integers(row_start, row_stop - 28 + 1, size=count)
        cols = rng.integers(0, image.shape[1] - 28 + 1, size=count)
        patches.extend(image[r : r + 28, c : c + 28] for r, c in zip(rows, cols, strict=True))
        labels.extend([label] * count)
    return np.stack(patches), np.asarray(labels, dtype=np.int64)


def _raw(task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if task == "fmnist_tops":
        return _fashion_split(TOPS_CLASSES, split)
    if task == "fmnist_footwear":
        return _fashion_split(FOOTWEAR_CLASSES, split)
    if task == "sklearn_digits":
        return _permutation_split(*_sklearn_digits(), split)
    if task == "opencv_digits":
        return _permutation_split(*_opencv_digits(), split)
    if task == "textures":
        return _textures(split)
    return _permutation_split(*_lfw(), split, stratify=True)


def _standardize(raw: Callable[[str], tuple[np.ndarray, np.ndarray]], split: str) -> tuple[Tensor, Tensor]:
    train = torch.from_numpy(raw("train")[0])
    mean, std = float(train.mean()), float(train.std(correction=0)) + 1e-6
    images, labels = raw(split)
    x = (torch.from_numpy(images).float() - mean) / std
    return x[:, None].contiguous(), torch.from_numpy(labels.astype(np.int64))  # [N, 1, 28, 28], [N]


@functools.lru_cache(maxsize=64)
def _raw_cached(task: str, split: str, sources: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    del sources  # part of the cache key only: a test that moves a source must not get a stale copy
    if task == "pretrain":
        return _fashion_split(PRETRAIN_CLASSES, split)
    return _raw(task, split)


@functools.lru_cache(maxsize=64)
def _load_task_cached(task: str, split: str, sources: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    return _standardize(lambda s: _raw_cached(task, s, sources), split)


def _sources() -> tuple[str, ...]:
    return (str(FASHION_MNIST_DIR), str(OPENCV_DIGITS), str(WORDNET_DIR))


def load_task(task: str, split: Split) -> tuple[Tensor, Tensor]:
    """A split of a vision task.

    Args:
        task: one of `VISION_TASKS`.
        split: "train", "val" or "test".

    Returns:
        x [N, 1, 28, 28] float32 standardized with the task's train-split mean and std; y [N] int64 in
        [0, num_classes(task)). Fresh tensors on every call (cached underneath, so callers may modify them).
    """
    _check_task(task)
    _check_split(split)
    x, y = _load_task_cached(task, split, _sources())
    return x.clone(), y.clone()


@functools.lru_cache(maxsize=8)
def _load_pretrain_cached(split: str, sources: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    x, y = _standardize(lambda s: _raw_cached("pretrain", s, sources), split)
    rotated = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    labels = [y * 4 + k for k in range(4)]
    return torch.cat(rotated), torch.cat(labels)


def load_pretrain(split: Split) -> tuple[Tensor, Tensor]:
    """The base backbone's pretraining data: Fashion-MNIST Trouser, Dress and Bag, each image at the four rotations
    by k*90 degrees; label = 4 * class + k (12 classes).

    Returns:
        x [4N, 1, 28, 28] float32, standardized; y [4N] int64 in [0, 12).
    """
    _check_split(split)
    x, y = _load_pretrain_cached(split, _sources())
    return x.clone(), y.clone()


# --- text --------------------------------------------------------------------------------------------------------
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_DOCUMENT_SYNSETS = 50


def wordnet_glosses() -> list[str]:
    """Documents of 50 consecutive WordNet 3.0 synsets, one "lemma: gloss" line each (lemma = the synset's first
    word, underscores as spaces), from the Debian `wordnet` package's data files."""
    lines: list[str] = []
    for name in WORDNET_FILES:
        path = _require_file(WORDNET_DIR / name, "WordNet")
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(" ") or "|" not in line:
                    continue  # the licence header is indented; every synset line has a gloss after "|"
                fields = line.split(" ", 5)
                if len(fields) < 6:
                    raise DataError(f"{path} has a malformed synset line: {line[:60]!r}")
                lemma = fields[4].replace("_", " ")
                gloss = line.split("|", 1)[1].strip()
                lines.append(f"{lemma}: {gloss}")
    if not lines:
        raise DataError(f"the WordNet files in {WORDNET_DIR} hold no synsets")
    step = WORDNET_DOCUMENT_SYNSETS
    return ["\n".join(lines[i : i + step]) + "\n" for i in range(0, len(lines), step)]


@functools.lru_cache(maxsize=3)
def _corpus_documents(corpus: str, sources: tuple[str, ...]) -> list[str]:
    del sources
    from paperzoo.core.lm.data import stdlib_sources, wikipedia_sample

    if corpus == "wikipedia":
        return [d.text for d in wikipedia_sample()]
    if corpus == "stdlib":
        return [d.text for d in stdlib_sources()]
    return wordnet_glosses()


def _encode(documents: list[str]) -> Tensor:
    """Bytes of each document followed by the end-of-document token 256. [N] int64"""
    parts = []
    eos = torch.tensor([256], dtype=torch.long)
    for text in documents:
        data = text.encode("utf-8")
        parts.append(torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else eos[:0])
        parts.append(eos)
    return torch.cat(parts)


@functools.lru_cache(maxsize=16)
def _load_corpus_cached(corpus: str, split: str, sources: tuple[str, ...]) -> Tensor:
    documents = _corpus_documents(corpus, sources)
    order = np.random.default_rng([SEED, TEXT_CORPORA.index(corpus)]).permutation(len(documents))
    kept, total = [], 0
    for index in order:
        if total >= CORPUS_BYTES:
            break
        kept.append(documents[index])
        total += len(documents[index].encode("utf-8"))
    if len(kept) < 10:
        raise DataError(f"the {corpus} corpus has {len(kept)} documents; splitting 80/10/10 needs at least 10")
    n_test = n_val = max(1, len(kept) // 10)
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(kept))}
    start, stop = bounds[split]
    return _encode(kept[start:stop])


def load_corpus(corpus: str, split: Split) -> Tensor:
    """Byte tokens of one split of a text corpus (split by document, documents separated by token 256).

    Args:
        corpus: one of `TEXT_CORPORA`.
        split: "train", "val" or "test".

    Returns:
        [N] int64 in [0, 257).
    """
    if corpus not in TEXT_CORPORA:
        raise ConfigError(f"unknown corpus {corpus!r}; expected one of {TEXT_CORPORA}")
    _check_split(split)
    return _load_corpus_cached(corpus, split, _sources()).clone()
