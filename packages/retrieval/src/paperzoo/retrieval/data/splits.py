"""What both offline benchmarks (Wikipedia passages, stdlib code search) share: the split by source group, the
verbatim-leak search, and the atomic on-disk cache of built splits."""

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from paperzoo.core.errors import require
from paperzoo.core.io import atomic_write_text, cache_dir
from paperzoo.core.lm.data import Document
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark

T = TypeVar("T")


def occurring(queries: Sequence[str], texts: Sequence[str]) -> set[str]:
    """The queries that occur verbatim (as substrings) in any of `texts`.

    A query of k >= 3 words can only occur in a text that holds its interior words 2..min(5, k-1) as whole
    words, so an index of those word n-grams narrows the search to a few candidate texts; queries of one or two
    words are searched in every text.
    """
    keys = {}
    for query in queries:
        words = query.split()
        if len(words) >= 3:
            keys[query] = tuple(words[1 : 1 + min(4, len(words) - 2)])
    needed = set(keys.values())
    lengths = {len(key) for key in needed}
    holders: dict[tuple[str, ...], list[int]] = {}
    for t, text in enumerate(texts):
        words = text.split()
        for n in lengths:
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if gram in needed:
                    holders.setdefault(gram, []).append(t)
    joined = "\n".join(texts)
    found = set()
    for query in queries:
        candidates = (texts[t] for t in holders.get(keys[query], ())) if query in keys else [joined]
        if any(query in text for text in candidates):
            found.add(query)
    return found


def split_by_group(
    items: Sequence[T], group_of: Callable[[T], str], dev_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[T]]:
    """train/dev/test of `items` by whole groups (articles, modules): the groups in a seeded order go to test,
    then dev, each until it holds its fraction of the items; the rest is train. Every split gets a group."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(group_of(item), []).append(item)
    require(len(groups) >= 3, f"a train/dev/test split by group needs at least 3 groups, got {len(groups)}")
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    splits: dict[str, list[T]] = {"test": [], "dev": [], "train": []}
    cursor = 0
    for name, fraction in (("test", test_fraction), ("dev", dev_fraction)):
        # Each split takes at least one group and leaves at least one for the splits after it.
        while cursor < len(order) - (2 if name == "test" else 1) and (
            not splits[name] or len(splits[name]) < fraction * len(items)
        ):
            splits[name].extend(groups[order[cursor]])
            cursor += 1
    for group in order[cursor:]:
        splits["train"].extend(groups[group])
    return splits


def check_fractions(dev_fraction: float, test_fraction: float) -> None:
    require(0 < dev_fraction < 1, f"dev_fraction must be in (0, 1), got {dev_fraction}")
    require(0 < test_fraction < 1, f"test_fraction must be in (0, 1), got {test_fraction}")
    total = dev_fraction + test_fraction
    require(total < 1, f"dev_fraction + test_fraction must be below 1, got {total}")


BENCHMARK_FIELDS = ("name", "corpus", "queries", "qrels", "groups")


def splits_to_json(splits: BenchmarkSplits) -> str:
    return json.dumps(
        {
            split: {name: getattr(getattr(splits, split), name) for name in BENCHMARK_FIELDS}
            for split in ("train", "dev", "test")
        }
    )


def splits_from_json(text: str) -> BenchmarkSplits:
    data = json.loads(text)
    return BenchmarkSplits(**{split: RetrievalBenchmark(**data[split]) for split in ("train", "dev", "test")})


def cached_splits(kind: str, key: dict[str, Any], build: Callable[[], BenchmarkSplits]) -> BenchmarkSplits:
    """`build()`, or its result cached under `cache_dir("retrieval")` by `kind` and `key` (atomically written;
    an unreadable cache file is rebuilt)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir("retrieval") / f"{kind}-{digest}.json"
    if path.exists():
        try:
            return splits_from_json(path.read_text())
        except (ValueError, KeyError, TypeError):
            pass  # a cache file from an interrupted or older writer: rebuild it
    splits = build()
    atomic_write_text(path, splits_to_json(splits))
    return splits


def documents_digest(documents: Sequence[Document]) -> str:
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.title.encode() + b"\0" + document.text.encode() + b"\0")
    return digest.hexdigest()[:16]
