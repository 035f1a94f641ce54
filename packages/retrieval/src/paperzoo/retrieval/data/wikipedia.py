"""Passage retrieval over the 106-article Wikipedia sample that ships with gensim, with queries built from the text.

There is no human-labelled retrieval benchmark offline, so the queries are constructed, in the two ways the
literature uses for unsupervised retrieval training and evaluation:

- Section headings: "<article title>: <heading>: <subheading>" asks for the passages of that section (its
  subsections included). Generic sections (References, External links, See also, ...) are dropped entirely.
- Inverse cloze (Lee, Chang & Toutanova, "Latent Retrieval for Weakly Supervised Open Domain Question Answering",
  arXiv:1906.00300): the first sentence of a passage is removed from it and becomes a query whose one relevant
  document is the rest of the passage. Unlike ORQA (which keeps the sentence in 10% of cases) it is always
  removed: no query text ever appears verbatim in any split's corpus.

Articles are cleaned (bold/italic marks, list bullets, empty brackets, table cells and captions dropped), cut into
sections at `==Heading==` lines, and each section into passages of whole sentences of about `passage_words` words.
Identical passages and sentences that occur twice are deduplicated across the whole sample before the split, and
the split is by article (seeded), so no article, passage or query text is shared between train, dev and test.
`groups` maps each passage to its article title.

The built splits are cached (atomically) under `cache_dir("retrieval")`, keyed by the parameters, `CODE_VERSION`
and a digest of the source text; bump `CODE_VERSION` whenever the construction changes.
"""

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from paperzoo.core.errors import require
from paperzoo.core.lm.data import Document, wikipedia_sample
from paperzoo.retrieval.data.benchmark import BenchmarkSplits, RetrievalBenchmark
from paperzoo.retrieval.data.splits import cached_splits, check_fractions, documents_digest, occurring, split_by_group

CODE_VERSION = 2

# Sections that hold references, links and lists rather than prose about the article's subject.
GENERIC_SECTIONS = frozenset(
    {
        "references",
        "external links",
        "see also",
        "further reading",
        "notes",
        "footnotes",
        "bibliography",
        "citations",
        "sources",
        "works cited",
        "notes and references",
        "references and notes",
        "general references",
        "primary sources",
        "secondary sources",
        "gallery",
        "other uses",
        "online",
        "reading list",
        "endnotes",
    }
)
# Words ending in "." that do not end a sentence.
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "gov",
        "rev",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "c",
        "ca",
        "approx",
        "no",
        "vol",
        "fig",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
        "u.k",
        "b.c",
        "a.d",
        "a.m",
        "p.m",
        "inc",
        "ltd",
        "co",
        "corp",
        "mt",
        "ft",
        "al",
    ]
)
HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
MIN_LINE_WORDS = 8  # shorter lines are table cells, captions and list residue unless they end a sentence
MIN_QUERY_WORDS = 5  # shorter lead sentences are too vague to be an inverse-cloze query
MAX_QUERY_WORDS = 64


# --- cleaning ------------------------------------------------------------------------------------------------------
def clean_line(line: str) -> str:
    """One line of `filter_wiki` output as plain prose: no bold/italic quotes, bullets or empty brackets."""
    line = re.sub(r"'{2,}", "", line)
    line = re.sub(r"^[*#:;]+\s*", "", line.strip())
    line = re.sub(r"\(\s*[,;:]?\s*\)|\[\s*\]", "", line)  # brackets whose content filter_wiki removed
    line = re.sub(r"\(\s*[,;][,;\s]*", "(", line)
    line = re.sub(r"\s+", " ", line).strip()
    return re.sub(r" ([,.;:!?])", r"\1", line)


def is_prose(line: str) -> bool:
    """Keep sentences and paragraphs; drop table cells, image captions and bare list items."""
    words = len(line.split())
    if "|" in line or words == 0:
        return False
    return words >= 3 * MIN_LINE_WORDS or (words >= MIN_LINE_WORDS and SENTENCE_END.search(line) is not None)


def split_sentences(text: str) -> list[str]:
    """Split prose at ".", "!" or "?" followed by a capitalised word, except after initials and abbreviations."""
    sentences, current = [], []
    words = text.split()
    for i, word in enumerate(words):
        current.append(word)
        following = words[i + 1] if i + 1 < len(words) else None
        if following is None:
            break
        if not SENTENCE_END.search(word) or not re.match(r"[\"'(\[]?[A-Z0-9]", following):
            continue
        stem = re.sub(r"[.!?\"')\]]+$", "", word).lower().lstrip("\"'([")
        if word.rstrip("\"')]").endswith(".") and (len(stem) <= 1 or stem in ABBREVIATIONS):
            continue
        sentences.append(" ".join(current))
        current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


# --- sections and passages -----------------------------------------------------------------------------------------
@dataclass
class Section:
    """A heading path (empty for the lead) and the sentences written directly under it."""

    path: tuple[str, ...]
    sentences: list[str] = field(default_factory=list)


def article_sections(text: str) -> list[Section]:
    """Cut an article at its heading lines; generic sections (and their subsections) are dropped."""
    sections = [Section(())]
    stack: list[tuple[int, str]] = []  # (heading level, heading) of the enclosing sections
    paragraphs: list[str] = []

    def flush() -> None:
        sections[-1].sentences.extend(s for p in paragraphs for s in split_sentences(p))
        paragraphs.clear()

    for raw in text.splitlines():
        heading = HEADING.match(raw.strip())
        if heading:
            flush()
            level, name = len(heading.group(1)), clean_line(heading.group(2))
            stack = [(lvl, h) for lvl, h in stack if lvl < level] + [(level, name)]
            sections.append(Section(tuple(h for _, h in stack)))
            continue
        line = clean_line(raw)
        if is_prose(line):
            paragraphs.append(line)
    flush()
    return [s for s in sections if not any(h.lower() in GENERIC_SECTIONS or not h for h in s.path)]


def pack_passages(sentences: Sequence[str], passage_words: int) -> list[list[str]]:
    """Consecutive sentences grouped into passages of about `passage_words` words.

    A passage closes once it reaches `passage_words`; a short remainder (under half of that) joins the previous
    passage, and a section shorter than a fifth of `passage_words` makes no passage.
    """
    passages: list[list[str]] = []
    current: list[str] = []
    count = 0
    for sentence in sentences:
        current.append(sentence)
        count += len(sentence.split())
        if count >= passage_words:
            passages.append(current)
            current, count = [], 0
    if current:
        if passages and count < passage_words / 2:
            passages[-1].extend(current)
        elif count >= passage_words / 5:
            passages.append(current)
    return passages


@dataclass
class Passage:
    doc_id: str
    article: str
    path: tuple[str, ...]
    sentences: list[str]
    cloze: str | None = None  # the removed first sentence, when it is an inverse-cloze query

    @property
    def text(self) -> str:
        return " ".join(self.sentences[1:] if self.cloze else self.sentences)


def build_passages(documents: Sequence[Document], passage_words: int) -> list[Passage]:
    """Every article's passages, deduplicated, with inverse-cloze sentences marked (see the module docstring)."""
    passages = []
    for a, document in enumerate(documents):
        number = 0
        for section in article_sections(document.text):
            for sentences in pack_passages(section.sentences, passage_words):
                passages.append(Passage(f"wiki{a:03d}-p{number:03d}", document.title, section.path, sentences))
                number += 1
    # A lead sentence becomes a query only if it is long enough, leaves enough text behind, and occurs once.
    sentence_counts = Counter(s for p in passages for s in p.sentences)
    min_rest = max(MIN_QUERY_WORDS, passage_words // 5)
    for passage in passages:
        lead = passage.sentences[0]
        rest_words = sum(len(s.split()) for s in passage.sentences[1:])
        if (
            MIN_QUERY_WORDS <= len(lead.split()) <= MAX_QUERY_WORDS
            and rest_words >= min_rest
            and sentence_counts[lead] == 1
        ):
            passage.cloze = lead
    # A lead sentence may still be a substring of other text; give it back to its passage until none is.
    while True:
        clozed = [p for p in passages if p.cloze]
        leaked = occurring([p.cloze for p in clozed], [p.text for p in passages])  # type: ignore[misc]
        if not leaked:
            break
        for passage in clozed:
            if passage.cloze in leaked:
                passage.cloze = None
    seen: set[str] = set()
    unique = []
    for passage in passages:
        if passage.text not in seen:
            seen.add(passage.text)
            unique.append(passage)
    return unique


def heading_query(title: str, path: tuple[str, ...]) -> str:
    return ": ".join((title, *path))


def article_benchmark(name: str, passages: Sequence[Passage]) -> RetrievalBenchmark:
    """Corpus, heading and inverse-cloze queries and qrels of a set of articles' passages."""
    corpus = {p.doc_id: p.text for p in passages}
    groups = {p.doc_id: p.article for p in passages}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    heading_ids: dict[tuple[str, tuple[str, ...]], str] = {}
    headings_per_article: Counter[str] = Counter()
    for passage in passages:
        article_id = passage.doc_id.split("-")[0]
        # The passage answers the heading query of its own section and of every enclosing section.
        for depth in range(1, len(passage.path) + 1):
            key = (passage.article, passage.path[:depth])
            if key not in heading_ids:
                heading_ids[key] = f"{article_id}-h{headings_per_article[article_id]:03d}"
                headings_per_article[article_id] += 1
                queries[heading_ids[key]] = heading_query(*key)
            qrels.setdefault(heading_ids[key], {})[passage.doc_id] = 1
        if passage.cloze:
            qid = passage.doc_id.replace("-p", "-c")
            queries[qid] = passage.cloze
            qrels[qid] = {passage.doc_id: 1}
    return RetrievalBenchmark(name, corpus, queries, qrels, groups)


def build_wikipedia_passages(
    documents: Sequence[Document],
    passage_words: int = 100,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    name: str = "wikipedia",
) -> BenchmarkSplits:
    """The benchmark of `wikipedia_passages` from any list of articles (uncached; see the module docstring)."""
    require(passage_words >= 10, f"passage_words must be at least 10, got {passage_words}")
    check_fractions(dev_fraction, test_fraction)
    passages = build_passages(documents, passage_words)
    parts = split_by_group(passages, lambda p: p.article, dev_fraction, test_fraction, seed)
    return BenchmarkSplits(**{split: article_benchmark(f"{name}/{split}", parts[split]) for split in parts})


def wikipedia_passages(
    passage_words: int = 100,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_articles: int | None = None,
) -> BenchmarkSplits:
    """Passage retrieval on gensim's Wikipedia sample: heading and inverse-cloze queries, split by article.

    Args:
        passage_words: about how many words a passage holds (whole sentences, within one section).
        seed: seeds the assignment of articles to splits.
        dev_fraction, test_fraction: the share of passages (in whole articles) in dev and test.
        max_articles: use only the first N articles of the sample (tiny runs); at least 3.

    Returns:
        train/dev/test `RetrievalBenchmark`s named "wikipedia/<split>"; `groups` maps passages to article titles.
    """
    require(max_articles is None or max_articles >= 3, f"max_articles must be at least 3, got {max_articles}")
    documents = wikipedia_sample()[:max_articles]
    key = {
        "passage_words": passage_words,
        "seed": seed,
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "version": CODE_VERSION,
        "source": documents_digest(documents),
    }
    return cached_splits(
        "wikipedia",
        key,
        lambda: build_wikipedia_passages(documents, passage_words, seed, dev_fraction, test_fraction),
    )
