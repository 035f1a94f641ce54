"""LRA byte-level text classification, on real text available offline.

Long Range Arena, Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006,
https://arxiv.org/abs/2011.04006. LRA's "Text" task classifies IMDB reviews (positive / negative) read byte by byte,
truncated or padded to 1000 (or 4000) bytes, so the model must compose characters into words and words into a
judgement without a tokenizer.

What is implemented: the same input (UTF-8 bytes + 1 as tokens, 0 = padding, vocab 257, the first `max_length`
bytes) and task shape (one label per document), on text that ships with this machine: the docstrings (module,
class and function, extracted with `ast`) of the Python standard library, labelled by top-level package (default:
asyncio, email, tkinter, distutils; 4 classes). Each file's docstrings are joined and cut into windows of
`max_length` bytes (stride `max_length // 2`, the last window kept when it has at least `min_length` bytes).
Files, not windows, are split into train / val / test (per package, seeded), so no source file is shared across
splits; each split is then subsampled to the same number of windows per class, so chance accuracy is 1 / classes.

`path=` reads a standard layout instead:
- the IMDB `aclImdb` directory (`train/pos`, `train/neg`, `test/pos`, `test/neg`, one review per `.txt`; label 1 =
  pos), val taken from train by `val_fraction` (LRA evaluates on test);
- or a directory with `train.tsv`/`train.csv` and `test.tsv`/`test.csv` (optional `val.*`), each with a header row
  naming a `text` and a `label` column (integer labels 0 .. num_classes - 1).

Deviations: the default source is not IMDB (not available offline) and the labels are topics, not sentiment.
"""

import ast
import csv
import sys
from pathlib import Path

import torch

from paperzoo.core.errors import DataError, require
from paperzoo.core.lm.data import stdlib_sources
from paperzoo.efficiency.sequence.lra.base import PAD, SPLITS, SequenceDataModule, Split

DEFAULT_PACKAGES = ("asyncio", "email", "tkinter", "distutils")


def encode_bytes(data: bytes, length: int) -> torch.Tensor:
    """Bytes -> tokens [length]: byte + 1, truncated, padded with 0."""
    ids = torch.frombuffer(bytearray(data[:length]), dtype=torch.uint8).long() + 1 if data else torch.zeros(0).long()
    return torch.cat([ids, torch.full((length - len(ids),), PAD, dtype=torch.long)])


def docstrings(source: str) -> str:
    """Every module, class and function docstring of a Python source, in order, joined by blank lines."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return "\n\n".join(doc for node in ast.walk(tree) if isinstance(node, nodes) and (doc := ast.get_docstring(node)))


def windows(data: bytes, length: int, min_length: int) -> list[bytes]:
    """Windows of up to `length` bytes at stride length // 2 until one reaches the end; those shorter than
    `min_length` are dropped."""
    out = []
    for start in range(0, len(data), max(1, length // 2)):
        chunk = data[start : start + length]
        if len(chunk) >= min_length:
            out.append(chunk)
        if start + length >= len(data):
            break
    return out


def split_groups(groups: list[str], fractions: tuple[float, float], generator: torch.Generator) -> dict[str, list[str]]:
    """A seeded permutation of whole groups (files, articles) cut into train / val / test, one at least in each."""
    require(len(groups) >= 3, f"need at least 3 groups to split into train, val and test, got {len(groups)}")
    order = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    n_val = max(1, round(fractions[0] * len(groups)))
    n_test = max(1, round(fractions[1] * len(groups)))
    n_val, n_test = min(n_val, len(groups) - 2), min(n_test, len(groups) - 1 - min(n_val, len(groups) - 2))
    return {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}


class ByteTextDataModule(SequenceDataModule):
    """Byte-level document classification (LRA Text); see the module docstring.

    Args:
        packages: standard-library top-level packages, one class each (default source).
        max_length: bytes per sequence (LRA: 1000, or 4000 for the long variant).
        min_length: shortest window kept (default source).
        val_fraction, test_fraction: fractions of each package's files (default source); with `path`, val_fraction
            of the train documents become val when there is no val file.
        num_classes: classes of a TSV/CSV `path` (aclImdb: 2).
        path: an aclImdb directory or a directory of train/val/test TSV/CSV files.
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    def __init__(
        self,
        packages: list[str] | tuple[str, ...] = DEFAULT_PACKAGES,
        max_length: int = 512,
        min_length: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        num_classes: int = 2,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        require(max_length >= 8, f"max_length must be at least 8, got {max_length}")
        require(0 < min_length <= max_length, f"min_length must be in (0, max_length], got {min_length}")
        require(
            val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1,
            f"val_fraction and test_fraction must be positive and sum below 1, got {val_fraction}, {test_fraction}",
        )
        if path is None:
            require(len(packages) >= 2, f"need at least 2 packages (classes), got {list(packages)}")
            require(len(set(packages)) == len(packages), f"packages must be distinct, got {list(packages)}")
            num_classes = len(packages)
        require(num_classes >= 2, f"num_classes must be at least 2, got {num_classes}")
        self.vocab_size, self.num_classes, self.seq_len = 257, num_classes, max_length

    def build(self) -> dict[str, Split]:
        if self.path is not None:
            return self.read_path()
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        by_split: dict[str, list[tuple[bytes, int]]] = {s: [] for s in SPLITS}
        files: dict[str, dict[str, bytes]] = {p: {} for p in hp.packages}
        for doc in stdlib_sources():
            top = doc.title.split("/")[0]
            if top in files:
                text = docstrings(doc.text).encode("utf-8")
                if len(text) >= hp.min_length:
                    files[top][doc.title] = text
        for label, package in enumerate(hp.packages):
            if len(files[package]) < 3:
                raise DataError(
                    f"standard-library package {package!r} has {len(files[package])} files with docstrings in "
                    f"{sys.prefix}; need at least 3 (one per split)"
                )
            groups = split_groups(sorted(files[package]), (hp.val_fraction, hp.test_fraction), generator)
            for split, names in groups.items():
                for name in names:
                    by_split[split] += [(w, label) for w in windows(files[package][name], hp.max_length, hp.min_length)]
        return {split: self._balanced(samples, generator) for split, samples in by_split.items()}

    def _balanced(self, samples: list[tuple[bytes, int]], generator: torch.Generator) -> Split:
        """The same number of samples per class (the rarest class's count), in a seeded order."""
        per_class = [[s for s in samples if s[1] == c] for c in range(self.num_classes)]
        keep = min(len(c) for c in per_class)
        if keep == 0:
            raise DataError("a class has no text window in one of the splits; lower min_length or the fractions")
        chosen = [c[i] for c in per_class for i in torch.randperm(len(c), generator=generator)[:keep].tolist()]
        order = torch.randperm(len(chosen), generator=generator).tolist()
        return self._encode([chosen[i] for i in order])

    def _encode(self, samples: list[tuple[bytes, int]]) -> Split:
        tokens = torch.stack([encode_bytes(text, self.seq_len) for text, _ in samples])  # [N, L]
        return {"tokens": tokens, "label": torch.tensor([label for _, label in samples], dtype=torch.long)}

    # --- standard formats --------------------------------------------------------------------------------------
    def read_path(self) -> dict[str, Split]:
        root = self.check_path_exists()
        if (root / "train" / "pos").is_dir():
            require(self.num_classes == 2, f"aclImdb has 2 classes, but num_classes is {self.num_classes}")
            splits = {"train": self._read_imdb(root / "train"), "test": self._read_imdb(root / "test")}
        else:
            splits = {}
            for split in SPLITS:
                found = [root / f"{split}.{ext}" for ext in ("tsv", "csv") if (root / f"{split}.{ext}").is_file()]
                if found:
                    splits[split] = self._read_table(found[0])
                elif split != "val":
                    raise DataError(f"{root} holds neither an aclImdb layout nor {split}.tsv / {split}.csv")
        if "val" not in splits:
            train = splits["train"]
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
            n_val = max(1, round(self.hparams.val_fraction * len(train)))
            splits["val"], splits["train"] = [train[i] for i in order[:n_val]], [train[i] for i in order[n_val:]]
        for split, samples in splits.items():
            if not samples:
                raise DataError(f"{root}: the {split} split is empty")
        return {split: self._encode(samples) for split, samples in splits.items()}

    def _read_imdb(self, folder: Path) -> list[tuple[bytes, int]]:
        samples = []
        for label, name in ((0, "neg"), (1, "pos")):
            sub = folder / name
            if not sub.is_dir():
                raise DataError(f"aclImdb folder {sub} does not exist")
            samples += [(file.read_bytes(), label) for file in sorted(sub.glob("*.txt"))]
        return samples

    def _read_table(self, file: Path) -> list[tuple[bytes, int]]:
        delimiter = "\t" if file.suffix == ".tsv" else ","
        samples = []
        with open(file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise DataError(f"{file}: expected a header row with 'text' and 'label' columns")
            for line, row in enumerate(reader, start=2):
                label = (row.get("label") or "").strip()
                if not label.isdigit() or int(label) >= self.num_classes or row.get("text") is None:
                    raise DataError(f"{file} line {line}: label {label!r} is not an integer in [0, {self.num_classes})")
                samples.append((row["text"].encode("utf-8"), int(label)))
        return samples
