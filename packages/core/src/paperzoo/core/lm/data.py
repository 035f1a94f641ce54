"""Text corpora for language modelling: offline sources, tokenizers and `TextDataModule`.

Sources (DATA.md): the 106-article Wikipedia sample that ships in gensim's test data, and the Python standard
library's own source code. A user's corpus in the usual formats: a JSON-lines file with a "text" field per line
(the Hugging Face `datasets` export), or a directory of `.txt` files (one document each).

Splits are made by document (never by position inside one), from a seeded permutation, so no text of a validation
document is ever trained on.
"""

import bz2
import hashlib
import importlib.util
import json
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch.utils.data import Dataset

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import DataError, require
from paperzoo.core.io import atomic_write_text, cache_dir

WIKIPEDIA_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


@dataclass(frozen=True)
class Document:
    title: str
    text: str


# --- sources ---------------------------------------------------------------------------------------------------
def wikipedia_sample() -> list[Document]:
    """The articles of gensim's Wikipedia dump sample as plain text (markup stripped, redirects dropped).

    Parsing takes ~7 s, so the result is cached (atomically) under the paperzoo cache directory.
    """
    cached = cache_dir("corpora") / "wikipedia-sample.json"
    if cached.exists():
        return [Document(**d) for d in json.loads(cached.read_text())]
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise DataError("the Wikipedia sample needs the gensim package (pip install gensim)")
    dump = Path(spec.origin).parent / "test" / "test_data" / WIKIPEDIA_SAMPLE
    if not dump.is_file():
        raise DataError(f"the Wikipedia sample {dump} is missing from the gensim installation")
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    documents = []
    with bz2.open(dump) as handle:
        for title, markup, _page_id in extract_pages(handle):
            text = filter_wiki(markup).strip()
            if text and not text.upper().startswith("#REDIRECT"):
                documents.append(Document(title, text))
    atomic_write_text(cached, json.dumps([asdict(d) for d in documents]))
    return documents


def stdlib_sources() -> list[Document]:
    """Every module of this Python's standard library (tests and site-packages excluded), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root)
        if relative.parts[0] in {"site-packages", "test", "idlelib"} or "tests" in relative.parts:
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            documents.append(Document(str(relative), text))
    return documents


def read_documents(path: Path) -> list[Document]:
    """Documents from a JSON-lines file (one {"text": ...} object per line, "title" optional) or a directory of
    `.txt` files. Raises `DataError` naming the file and line for anything malformed."""
    if not path.exists():
        raise DataError(f"text corpus {path} does not exist")
    documents: list[Document] = []
    if path.is_dir():
        for file in sorted(path.rglob("*.txt")):
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{file} is not UTF-8 text ({err.reason} at byte {err.start})") from err
            if text.strip():
                documents.append(Document(str(file.relative_to(path)), text))
    elif path.suffix == ".jsonl":
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_number} is not valid JSON ({err.msg})") from err
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f'{path}:{line_number} has no string "text" field')
            documents.append(Document(str(record.get("title", line_number)), record["text"]))
    else:
        raise DataError(f"text corpus {path} is neither a .jsonl file nor a directory of .txt files")
    if len(documents) < 2:
        raise DataError(f"text corpus {path} holds {len(documents)} non-empty documents; a split needs at least 2")
    return documents


def split_by_document(
    documents: list[Document], val_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """(train, val): a seeded permutation of whole documents, at least one in each split."""
    require(0 < val_fraction < 1, f"val_fraction must be in (0, 1), got {val_fraction}")
    require(len(documents) >= 2, f"splitting by document needs at least 2 documents, got {len(documents)}")
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(max(1, round(val_fraction * len(documents))), len(documents) - 1)
    return [documents[i] for i in order[n_val:]], [documents[i] for i in order[:n_val]]


# --- tokenizers --------------------------------------------------------------------------------------------------
class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus an end-of-document token 256."""

    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """Byte-level BPE trained with Hugging Face `tokenizers` on the training documents only (cached by content).

    Args:
        documents: the training split.
        vocab_size: target vocabulary, including the end-of-document token.
    """

    EOS = "<|endoftext|>"

    def __init__(self, documents: list[Document], vocab_size: int):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        require(vocab_size > 256, f"a byte-level BPE needs vocab_size > 256, got {vocab_size}")
        digest = hashlib.sha256()
        for document in documents:
            digest.update(document.text.encode("utf-8"))
        cached = cache_dir("tokenizers") / f"bpe-{vocab_size}-{digest.hexdigest()[:16]}.json"
        if cached.exists():
            self.tokenizer = HFTokenizer.from_file(str(cached))
        else:
            self.tokenizer = HFTokenizer(models.BPE())
            self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self.tokenizer.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                special_tokens=[self.EOS],
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
            self.tokenizer.train_from_iterator((d.text for d in documents), trainer=trainer)
            atomic_write_text(cached, self.tokenizer.to_str())
        self.vocab_size = vocab_size
        eos_id = self.tokenizer.token_to_id(self.EOS)
        if eos_id is None:
            raise DataError(f"the BPE tokenizer in {cached} has no {self.EOS} token; delete the file to retrain it")
        self.eos_id: int = eos_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def encode_documents(documents: list[Document], tokenizer: Tokenizer) -> torch.Tensor:
    """One token stream: each document's tokens followed by the end-of-document token. [N] int64"""
    ids: list[int] = []
    for document in documents:
        ids.extend(tokenizer.encode(document.text))
        ids.append(tokenizer.eos_id)
    return torch.tensor(ids, dtype=torch.long)


class TokenWindows(Dataset):
    """Non-overlapping windows of `seq_len + 1` tokens (input = window[:-1], target = window[1:]).

    Shapes:
        item: [seq_len + 1] int64.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        if len(tokens) < seq_len + 1:
            raise DataError(f"a split of {len(tokens)} tokens is shorter than one window of {seq_len + 1}")
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.seq_len
        return self.tokens[start : start + self.seq_len + 1]


# --- datamodule --------------------------------------------------------------------------------------------------
class TextDataModule(BaseDataModule):
    """Language-modelling windows from a text corpus, split by document.

    Args:
        source: offline default corpus, "wikipedia" (gensim's sample) or "stdlib" (Python's source code).
        path: a user corpus (.jsonl or a directory of .txt files); overrides `source`.
        tokenizer: "byte" (257 ids) or "bpe" (trained on the training split).
        bpe_vocab_size: vocabulary of the BPE tokenizer.
        seq_len: tokens per training window.
        val_fraction: share of documents held out for validation.
        max_documents: use only the first documents of the source (quick runs).
        batch_size, num_workers, seed, pin_memory: see `BaseDataModule`.
    """

    def __init__(
        self,
        source: Literal["wikipedia", "stdlib"] = "wikipedia",
        path: str | None = None,
        tokenizer: Literal["byte", "bpe"] = "byte",
        bpe_vocab_size: int = 2048,
        seq_len: int = 128,
        val_fraction: float = 0.1,
        max_documents: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(path, batch_size, num_workers, seed, pin_memory)
        require(source in ("wikipedia", "stdlib"), f"source must be wikipedia or stdlib, got {source!r}")
        require(tokenizer in ("byte", "bpe"), f"tokenizer must be byte or bpe, got {tokenizer!r}")
        require(seq_len > 0, f"seq_len must be positive, got {seq_len}")
        require(0 < val_fraction < 1, f"val_fraction must be in (0, 1), got {val_fraction}")
        require(max_documents is None or max_documents >= 2, f"max_documents must be >= 2, got {max_documents}")
        self.source, self.tokenizer_kind, self.bpe_vocab_size = source, tokenizer, bpe_vocab_size
        self.seq_len, self.val_fraction, self.max_documents = seq_len, val_fraction, max_documents

    @property
    def vocab_size(self) -> int:
        """Linked to the task's `vocab_size` by the `paperzoo` command."""
        return ByteTokenizer.vocab_size if self.tokenizer_kind == "byte" else self.bpe_vocab_size

    def documents(self) -> list[Document]:
        if self.path is not None:
            documents = read_documents(self.path)
        elif self.source == "wikipedia":
            documents = wikipedia_sample()
        else:
            documents = stdlib_sources()
        return documents[: self.max_documents] if self.max_documents else documents

    def prepare_data(self) -> None:
        self.documents()  # validates a user corpus and fills the caches on one process

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        self.train_documents, self.val_documents = split_by_document(self.documents(), self.val_fraction, self.seed)
        self.tokenizer: Tokenizer = (
            ByteTokenizer()
            if self.tokenizer_kind == "byte"
            else BPETokenizer(self.train_documents, self.bpe_vocab_size)
        )
        self.train_set = TokenWindows(encode_documents(self.train_documents, self.tokenizer), self.seq_len)
        self.val_set = TokenWindows(encode_documents(self.val_documents, self.tokenizer), self.seq_len)
