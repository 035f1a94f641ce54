"""LRA byte-level document matching ("Retrieval"), on pairs of real documents available offline.

Long Range Arena, Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006,
https://arxiv.org/abs/2011.04006. LRA's "Retrieval" task reads two ACL Anthology Network (AAN) papers byte by byte
(4000 bytes each) and predicts whether one cites the other; each document is encoded separately by the same model
and the two pooled vectors are combined (concatenation, product, difference) before the classifier, a dual encoder.

What is implemented: the same input ([N, 2, L] byte tokens, byte + 1, 0 = padding, vocab 257; configs set
`paired: true` on `SequenceClassificationTask`, which is the dual encoder) and a binary label of the same kind, a
link between the two documents: on the Wikipedia sample (`paperzoo.core.lm.data.wikipedia_sample`, 106 articles),
each article is cut into passages of `max_length` bytes; a positive pair is two different passages of one article,
a negative pair two passages of two different articles. Articles (not passages) are split into train / val / test
(seeded), so no article is shared across splits. Exactly half of every split is positive.

`path=`: a directory with the LRA release files `new_aan_pairs.train.tsv`, `new_aan_pairs.eval.tsv` (val) and
`new_aan_pairs.test.tsv`: no header, tab-separated `label id1 id2 text1 text2`, label a float (1.0 / 0.0) as the
LRA pipeline reads it; each text is truncated to its first `max_length` bytes.

Deviations: "same article" replaces "cites"; passages are shorter by default (512 bytes) for a 2-core CPU (LRA: 4000).
"""

import csv
import sys
from pathlib import Path

import torch

from paperzoo.core.errors import DataError, require
from paperzoo.core.lm.data import wikipedia_sample
from paperzoo.efficiency.sequence.lra.base import SPLITS, SequenceDataModule, Split
from paperzoo.efficiency.sequence.lra.text import encode_bytes, split_groups

RELEASE_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}


def passages(text: str, length: int) -> list[bytes]:
    """Non-overlapping passages of exactly `length` bytes of a document's UTF-8 text (the remainder dropped)."""
    data = text.encode("utf-8")
    return [data[i : i + length] for i in range(0, len(data) - length + 1, length)]


def sample_pairs(
    groups: list[list[bytes]], count: int, generator: torch.Generator
) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """`count` pairs of passages, alternating positive (two different passages of one group) and negative (passages
    of two different groups), then shuffled. Positive pairs come from groups with at least two passages."""
    require(len(groups) >= 2, f"matching pairs need at least 2 documents, got {len(groups)}")
    multi = [g for g in groups if len(g) >= 2]
    if not multi:
        raise DataError("no document has two passages; lower max_length")

    def pick(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    pairs, labels = [], []
    for i in range(count):
        if i % 2 == 0:
            group = multi[pick(len(multi))]
            a = pick(len(group))
            b = (a + 1 + pick(len(group) - 1)) % len(group)
            pairs.append((group[a], group[b]))
        else:
            ga = pick(len(groups))
            gb = (ga + 1 + pick(len(groups) - 1)) % len(groups)
            pairs.append((groups[ga][pick(len(groups[ga]))], groups[gb][pick(len(groups[gb]))]))
        labels.append(1 - i % 2)
    order = torch.randperm(count, generator=generator).tolist()
    return [pairs[i] for i in order], [labels[i] for i in order]


class ByteMatchingDataModule(SequenceDataModule):
    """Byte-level document matching (LRA Retrieval), tokens [N, 2, L]; see the module docstring.

    Args:
        num_train, num_val, num_test: pairs per split (half positive).
        max_length: bytes per document (LRA: 4000).
        val_fraction, test_fraction: fractions of the articles in val and test.
        path: a directory with the LRA AAN release TSVs instead of the Wikipedia sample.
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    #: tokens are [N, 2, L] pairs: the task needs `paired=True` (the LRA table sets it from this).
    paired = True

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 250,
        num_test: int = 250,
        max_length: int = 512,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        require(min(num_train, num_val, num_test) > 0, "num_train, num_val and num_test must be positive")
        require(max_length >= 8, f"max_length must be at least 8, got {max_length}")
        require(
            val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1,
            f"val_fraction and test_fraction must be positive and sum below 1, got {val_fraction}, {test_fraction}",
        )
        self.vocab_size, self.num_classes, self.seq_len = 257, 2, max_length

    def documents(self) -> dict[str, str]:
        """title -> text of the default source (a hook for tests)."""
        return {doc.title: doc.text for doc in wikipedia_sample()}

    def build(self) -> dict[str, Split]:
        if self.path is not None:
            return {split: self.read_release(split) for split in SPLITS}
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        chunks = {title: passages(text, hp.max_length) for title, text in self.documents().items()}
        chunks = {title: p for title, p in chunks.items() if p}
        groups = split_groups(sorted(chunks), (hp.val_fraction, hp.test_fraction), generator)
        counts = {"train": hp.num_train, "val": hp.num_val, "test": hp.num_test}
        out = {}
        for split in SPLITS:
            if len(groups[split]) < 2:
                raise DataError(
                    f"the {split} split holds {len(groups[split])} article(s) with a full passage; negative pairs need "
                    "2: raise val_fraction / test_fraction or lower max_length"
                )
            pairs, labels = sample_pairs([chunks[t] for t in groups[split]], counts[split], generator)
            out[split] = self._encode(pairs, labels)
        return out

    def _encode(self, pairs: list[tuple[bytes, bytes]], labels: list[int]) -> Split:
        tokens = torch.stack(
            [torch.stack([encode_bytes(a, self.seq_len), encode_bytes(b, self.seq_len)]) for a, b in pairs]
        )  # [N, 2, L]
        return {"tokens": tokens, "label": torch.tensor(labels, dtype=torch.long)}

    def read_release(self, split: str) -> Split:
        """One AAN release TSV (no header; label id1 id2 text1 text2) -> pairs and labels."""
        file = Path(self.check_path_exists()) / RELEASE_FILES[split]
        if not file.is_file():
            raise DataError(f"AAN release file {file} does not exist")
        csv.field_size_limit(sys.maxsize)
        pairs, labels = [], []
        with open(file, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if len(row) != 5:
                    raise DataError(f"{file} line {line}: expected 5 tab-separated fields, got {len(row)}")
                try:
                    label = float(row[0])
                except ValueError:
                    raise DataError(f"{file} line {line}: label {row[0]!r} is not a number") from None
                if label not in (0.0, 1.0):
                    raise DataError(f"{file} line {line}: label {row[0]!r} is neither 0 nor 1")
                pairs.append((row[3].encode("utf-8"), row[4].encode("utf-8")))
                labels.append(int(label))
        if not pairs:
            raise DataError(f"{file} has no pairs")
        return self._encode(pairs, labels)
