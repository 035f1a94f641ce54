"""LRA ListOps: nested list operations over single digits, read as a flat token sequence.

Long Range Arena, Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006,
https://arxiv.org/abs/2011.04006 (ListOps itself: Nangia & Bowman 2018).

What is implemented (the benchmark's definitions, `lra_benchmarks/data/listops.py`):
- the grammar: an expression is a digit 0-9 or `[OP e1 ... ek ]` with OP in MAX, MIN, MED (median, truncated to an
  int as `int(np.median(...))`), SM (sum modulo 10), 2 <= k <= max_args; the label is its value (10 classes);
- the sampling: a node at depth < max_depth is an operator with probability 0.25 (a digit otherwise, and always a
  digit at max_depth), operators and digits uniform, the number of arguments uniform in [2, max_args]; trees are
  drawn from depth 1 and kept when min_length < length < max_length, where length counts operators, digits and
  closing brackets; duplicates are dropped and the unique trees are cut into train / val / test in that order;
- the release's defaults are `ListOpsDataModule.ORIGINAL` (max_depth 10, max_args 10, lengths 500-2000, 96k/2k/2k
  samples); the constructor's defaults keep the grammar and sampling but shorten the sequences (16-256 tokens) and
  shrink the splits for a 2-core CPU;
- `path=`: a directory with the release files `basic_train.tsv`, `basic_val.tsv`, `basic_test.tsv` (header
  `Source\\tTarget`; Source is the bracketed string, e.g. `( ( ( [MAX 2 ) 9 ) ] )`), tokenised like the generated
  samples and truncated to `max_length` tokens as the LRA input pipeline does.

Tokens: 0 padding, digits 0-9 -> 1-10, `[MIN` `[MAX` `[MED` `[SM` -> 11-14, `]` -> 15; the grouping parentheses of
the release strings carry no information and are dropped (they are not counted in the release's length either).

Deviations: the LRA input pipeline builds its vocabulary with `tfds`'s alphanumeric tokenizer, which drops `]`; we
keep the closing bracket as a token (as the S4 codebase does), because without it the expression is ambiguous. A
tree whose partial length already reaches `max_length` is abandoned early instead of being completed and then
rejected; the accepted trees have the same distribution. Duplicates are removed in generation order (a dict, not a
Python set), so the splits are deterministic from the seed.
"""

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paperzoo.core.errors import DataError, require
from paperzoo.efficiency.sequence.lra.base import PAD, SequenceDataModule, Split

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # probability that a node above max_depth is an operator (the release's VALUE_P)
#: token ids: 0 is padding, then the digits, the operators and the closing bracket.
VOCAB: dict[str, int] = {str(d): d + 1 for d in range(10)} | {op: 11 + i for i, op in enumerate(OPERATORS)} | {END: 15}
RELEASE_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}


class _TooLong(Exception):
    pass


def generate_expression(rng: random.Random, max_depth: int, max_args: int, max_length: int | None = None) -> list[str]:
    """One ListOps expression as a flat list of symbols (no parentheses), drawn with the release's sampling from
    depth 1. With `max_length`, raises `_TooLong` as soon as the expression reaches that many symbols."""
    out: list[str] = []

    def node(depth: int) -> None:
        if (rng.random() if depth < max_depth else 1.0) > VALUE_P:
            out.append(str(rng.randrange(10)))
        else:
            num_args = rng.randint(2, max_args)
            op = rng.choice(OPERATORS)
            out.append(op)
            for _ in range(num_args):
                node(depth + 1)
            out.append(END)
        if max_length is not None and len(out) >= max_length:
            raise _TooLong

    node(1)
    return out


def _apply(op: str, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        return int(np.median(args))
    return sum(args) % 10


def evaluate(symbols: list[str]) -> int:
    """The value (0-9) of a flat ListOps expression, by a stack machine over its symbols."""
    stack: list[list[Any]] = [[None, []]]
    for sym in symbols:
        if sym in OPERATORS:
            stack.append([sym, []])
        elif sym == END:
            require(len(stack) > 1, "unbalanced ListOps expression: ']' without an operator")
            op, args = stack.pop()
            stack[-1][1].append(_apply(op, args))
        else:
            stack[-1][1].append(int(sym))
    if len(stack) != 1 or len(stack[0][1]) != 1:
        raise DataError(f"malformed ListOps expression: {' '.join(symbols[:20])} ...")
    return stack[0][1][0]


def to_release_string(symbols: list[str]) -> str:
    """The release's bracketed form of a flat expression: `[MAX 2 9 ]` -> `( ( ( [MAX 2 ) 9 ) ] )`."""

    def parse(pos: int) -> tuple[str, int]:
        sym = symbols[pos]
        if sym not in OPERATORS:
            return sym, pos + 1
        text, pos = sym, pos + 1
        while symbols[pos] != END:
            arg, pos = parse(pos)
            text = f"( {text} {arg} )"
        return f"( {text} {END} )", pos + 1

    text, end = parse(0)
    require(end == len(symbols), "trailing symbols after a complete ListOps expression")
    return text


def tokenize(source: str) -> list[str]:
    """Symbols of a release `Source` string (whitespace split, grouping parentheses dropped)."""
    return [s for s in source.split() if s not in ("(", ")")]


def encode(symbols: list[str], length: int) -> torch.Tensor:
    """Symbols -> token ids [length] (truncated or padded with 0). Raises KeyError on an unknown symbol."""
    ids = [VOCAB[s] for s in symbols[:length]]
    return torch.tensor(ids + [PAD] * (length - len(ids)), dtype=torch.long)


class ListOpsDataModule(SequenceDataModule):
    """LRA ListOps, generated offline (or read from the release TSVs with `path`); see the module docstring.

    Args:
        num_train, num_val, num_test: unique expressions per split.
        min_length, max_length: keep expressions with min_length < symbols < max_length; sequences are padded to
            max_length (with `path`, longer ones are truncated to it).
        max_depth, max_args: the grammar's depth limit and the most arguments per operator.
        path: a directory with basic_{train,val,test}.tsv from the LRA release instead of generating.
        batch_size, num_workers, seed: see `BaseDataModule` (the seed drives the generator).
    """

    #: the LRA release's generator settings.
    ORIGINAL = dict(
        num_train=96000, num_val=2000, num_test=2000, min_length=500, max_length=2000, max_depth=10, max_args=10
    )

    def __init__(
        self,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        min_length: int = 16,
        max_length: int = 256,
        max_depth: int = 10,
        max_args: int = 10,
        path: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        require(min(num_train, num_val, num_test) > 0, "num_train, num_val and num_test must be positive")
        require(max_depth >= 1, f"max_depth must be at least 1, got {max_depth}")
        require(max_args >= 2, f"max_args must be at least 2, got {max_args}")
        require(
            0 <= min_length < max_length - 1 and max_length >= 5,
            f"need 0 <= min_length < max_length - 1 and max_length >= 5, got {min_length} and {max_length}",
        )
        self.vocab_size, self.num_classes, self.seq_len = len(VOCAB) + 1, 10, max_length

    def generate(self) -> list[tuple[list[str], int]]:
        """Unique (symbols, value) pairs, train then val then test, as the release generator makes them."""
        hp = self.hparams
        total = hp.num_train + hp.num_val + hp.num_test
        rng = random.Random(hp.seed)
        found: dict[tuple[str, ...], None] = {}
        attempts, last_new, patience = 0, 0, 50 * total + 10000
        while len(found) < total:
            attempts += 1
            if attempts - last_new > patience:
                raise DataError(
                    f"ListOps: only {len(found)} of {total} unique expressions with {hp.min_length} < length < "
                    f"{hp.max_length} ({patience} draws found no new one); widen the length range or lower the "
                    "sample counts"
                )
            try:
                symbols = generate_expression(rng, hp.max_depth, hp.max_args, hp.max_length)
            except _TooLong:
                continue
            if len(symbols) > hp.min_length and tuple(symbols) not in found:
                found[tuple(symbols)] = None
                last_new = attempts
        return [(list(s), evaluate(list(s))) for s in found]

    def build(self) -> dict[str, Split]:
        if self.path is not None:
            return {split: self.read_release(split) for split in RELEASE_FILES}
        hp = self.hparams
        samples = self.generate()
        bounds = {"train": (0, hp.num_train), "val": (hp.num_train, hp.num_train + hp.num_val)}
        bounds["test"] = (hp.num_train + hp.num_val, len(samples))
        return {split: self._encode(samples[a:b]) for split, (a, b) in bounds.items()}

    def _encode(self, samples: list[tuple[list[str], int]]) -> Split:
        tokens = torch.stack([encode(s, self.seq_len) for s, _ in samples])  # [N, L]
        return {"tokens": tokens, "label": torch.tensor([v for _, v in samples], dtype=torch.long)}

    def read_release(self, split: str) -> Split:
        """One release TSV (`Source\\tTarget` with a header row) -> tokens and labels."""
        file = Path(self.check_path_exists()) / RELEASE_FILES[split]
        if not file.is_file():
            raise DataError(f"ListOps release file {file} does not exist")
        samples: list[tuple[list[str], int]] = []
        with open(file, newline="") as handle:
            rows = csv.reader(handle, delimiter="\t")
            header = next(rows, None)
            if header != ["Source", "Target"]:
                raise DataError(f"{file}: expected the header 'Source<TAB>Target', got {header}")
            for line, row in enumerate(rows, start=2):
                if len(row) != 2:
                    raise DataError(f"{file} line {line}: expected 2 tab-separated fields, got {len(row)}")
                symbols = tokenize(row[0])
                unknown = sorted(set(symbols) - VOCAB.keys())
                if unknown or not row[1].strip().isdigit() or not 0 <= int(row[1]) <= 9:
                    raise DataError(f"{file} line {line}: unknown symbols {unknown} or a target outside 0-9")
                samples.append((symbols, int(row[1])))
        if not samples:
            raise DataError(f"{file} has no samples")
        return self._encode(samples)
