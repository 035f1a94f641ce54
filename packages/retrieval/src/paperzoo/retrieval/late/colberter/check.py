"""Claim check for ColBERTer (CATALOG 33, https://arxiv.org/abs/2203.13088): an index at least 2x smaller than
plain ColBERT token storage at about equal MRR@10, and the storage/effectiveness curve down to 1 dimension.

Data: the Wikipedia passage benchmark (`paperzoo.retrieval.data.wikipedia.wikipedia_passages`; split by article):
training pairs from the train split (`data.module.positive_pairs`, a seeded subset), evaluation of every test
query against the whole test corpus (brute force, no candidate stage, so only the representations differ).

Models, all on all-MiniLM-L6-v2 with the same budget (training pairs, batches, steps, optimizer, seeds):
- ColBERT (baseline): MaxSim over every subword vector ([CLS] and [SEP] included), projected to 128 dimensions;
- ColBERTer at token_dim 32 and 8: a 128-d single vector fused with MaxSim over BOW^2 whole-word vectors, with
  contextualised stopwords removed at index time;
- Uni-ColBERTer: 1 dimension per whole word with exact-match scoring (the word ids are stored too);
- full mode also ColBERTer 32 without stopwords (the contribution of the stopword removal).
Also reported: all-MiniLM-L6-v2 itself (mean-pooled cosine, untrained: where the frozen encoder starts) and the
single-vector score of ColBERTer 32 alone.

Deviation (budget: 2 CPU cores): the encoder stays frozen (trainable_layers=0; its states are computed once per
text, cached on disk, and shared by every variant); every variant trains only its heads (projections, gate,
score aggregation). The paper fine-tunes the whole DistilBERT in several stages with distillation.

Storage is measured in bytes on disk of what a search needs: the token / whole-word vectors (fp16
`MultiVectorStore`, offsets included), the single vectors (fp16, ColBERTer), and for Uni-ColBERTer the int32
lexicon index of every stored word plus the lexicon (one int64 word key per distinct word). Effectiveness is
computed from the vectors read back from these files.

Decision rule (fixed before any run): ColBERTer 32 stores at most half the bytes of ColBERT
(bytes ratio >= 2), and its MRR@10, mean over seeds, is at most 0.02 below ColBERT's (absolute).
"""

import hashlib
import logging
import random
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save as safetensors_save

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.core.io import atomic_open, atomic_torch_save, cache_dir
from paperzoo.retrieval.data.benchmark import RetrievalBenchmark
from paperzoo.retrieval.data.module import positive_pairs
from paperzoo.retrieval.data.wikipedia import wikipedia_passages
from paperzoo.retrieval.encoder import MiniLMEncoder, PrefixCache, mean_pool
from paperzoo.retrieval.index.multivector import MultiVectorStore
from paperzoo.retrieval.late.colberter.model import NO_WORD, Representation
from paperzoo.retrieval.late.colberter.task import ColBERTerTask
from paperzoo.retrieval.losses import cosine_scores
from paperzoo.retrieval.metrics import retrieval_metrics

BASELINE, METHOD = "colbert_128", "colberter_32"
TOLERANCE = 0.02  # MRR@10, absolute
VARIANTS: dict[str, dict[str, Any]] = {
    "colbert_128": {"cls_dim": 0, "token_dim": 128, "bow2": False, "stopwords": False},
    "colberter_32": {"cls_dim": 128, "token_dim": 32},
    "colberter_32_no_stopwords": {"cls_dim": 128, "token_dim": 32, "stopwords": False},
    "colberter_8": {"cls_dim": 128, "token_dim": 8},
    "uni_colberter_1": {"cls_dim": 128, "token_dim": 32, "stored_dim": 1, "exact_match": True},
}


@dataclass(frozen=True)
class Setting:
    seeds: tuple[int, ...]
    train_pairs: int
    steps: int
    variants: tuple[str, ...]
    test_articles_fraction: float = 1.0  # quick mode: the test corpus of a subset of the test articles
    evaluation_split: str = "test"  # "dev" while developing: settings were chosen on dev, never on test
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_query_length: int = 32
    max_doc_length: int = 128
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Setting(
    seeds=(0,),
    train_pairs=160,
    steps=50,
    variants=("colbert_128", "colberter_32", "uni_colberter_1"),
    test_articles_fraction=0.25,
)
FULL = Setting(seeds=(0, 1), train_pairs=1024, steps=120, variants=tuple(VARIANTS))


def cached_prefix(encoder: MiniLMEncoder, texts: Sequence[str], max_length: int) -> PrefixCache:
    """`PrefixCache(encoder, texts, max_length)`, kept on disk under `cache_dir("retrieval", "colberter")` keyed by
    the texts, the length and the frozen layers (only for the packaged pretrained encoder)."""
    digest = hashlib.sha256(f"{max_length}|{encoder.split}|".encode() + "\x00".join(texts).encode()).hexdigest()
    path = cache_dir("retrieval", "colberter") / f"prefix-{digest[:24]}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            cache = PrefixCache.__new__(PrefixCache)
            cache.states, cache.tokens = saved["states"], saved["tokens"]
            if len(cache) == len(texts):
                return cache
        except (OSError, RuntimeError, KeyError, TypeError):  # a stale or broken cache file is rebuilt
            pass
    cache = PrefixCache(encoder, texts, max_length)
    atomic_torch_save({"states": cache.states, "tokens": cache.tokens}, path)
    return cache


@dataclass
class Texts:
    """Training pairs and the test benchmark, with the encoder states of every text."""

    test: RetrievalBenchmark
    train_queries: PrefixCache
    train_docs: PrefixCache
    test_queries: PrefixCache
    test_docs: PrefixCache


def subset_by_article(benchmark: RetrievalBenchmark, fraction: float, seed: int) -> RetrievalBenchmark:
    """The passages of a seeded `fraction` of the articles, with the queries whose relevant passages remain."""
    if fraction >= 1.0:
        return benchmark
    articles = sorted(set(benchmark.groups.values()))
    kept = set(random.Random(seed).sample(articles, max(1, round(fraction * len(articles)))))
    corpus = {d: t for d, t in benchmark.corpus.items() if benchmark.groups[d] in kept}
    qrels = {q: {d: g for d, g in judged.items() if d in corpus} for q, judged in benchmark.qrels.items()}
    qrels = {q: judged for q, judged in qrels.items() if judged}
    return RetrievalBenchmark(
        name=f"{benchmark.name}[{len(kept)} articles]",
        corpus=corpus,
        queries={q: benchmark.queries[q] for q in qrels},
        qrels=qrels,
        groups={d: benchmark.groups[d] for d in corpus},
    )


def prepare_texts(setting: Setting) -> Texts:
    splits = wikipedia_passages()
    pairs = positive_pairs(splits.train, seed=0)
    pairs = random.Random(0).sample(pairs, min(setting.train_pairs, len(pairs)))
    test = subset_by_article(getattr(splits, setting.evaluation_split), setting.test_articles_fraction, seed=0)
    encoder = MiniLMEncoder(trainable_layers=0)  # every layer in the (cached) prefix
    return Texts(
        test=test,
        train_queries=cached_prefix(encoder, [splits.train.queries[q] for q, _ in pairs], setting.max_query_length),
        train_docs=cached_prefix(encoder, [splits.train.corpus[d] for _, d in pairs], setting.max_doc_length),
        test_queries=cached_prefix(encoder, list(test.queries.values()), setting.max_query_length),
        test_docs=cached_prefix(encoder, list(test.corpus.values()), setting.max_doc_length),
    )


def train(setting: Setting, texts: Texts, variant: str, seed: int) -> ColBERTerTask:
    """One variant trained on the cached states: `setting.steps` batches of in-batch negatives."""
    torch.manual_seed(seed)
    task = ColBERTerTask(trainable_layers=0, **VARIANTS[variant])
    trainable = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=setting.lr, weight_decay=setting.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=setting.lr, total_steps=setting.steps, pct_start=0.1, anneal_strategy="linear"
    )
    order = random.Random(seed)
    indices = list(range(len(texts.train_docs)))
    batches: list[list[int]] = []
    while len(batches) < setting.steps:
        order.shuffle(indices)
        batches += [
            indices[s : s + setting.batch_size]
            for s in range(0, len(indices) - setting.batch_size + 1, setting.batch_size)
        ]
    task.train()
    for batch_indices in batches[: setting.steps]:
        batch = {"query": texts.train_queries.batch(batch_indices), "doc": texts.train_docs.batch(batch_indices)}
        loss = task.losses(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return task.eval()


def encode_all(task: ColBERTerTask, cache: PrefixCache, is_document: bool, chunk: int = 64) -> list[Representation]:
    """Index-time representations of every cached text, in chunks."""
    out = []
    with torch.no_grad():
        for start in range(0, len(cache), chunk):
            batch = cache.batch(list(range(start, min(start + chunk, len(cache)))))
            out.append(task.encode(batch, is_document=is_document, remove_stopwords=True))
    return out


def write_word_ids(keys: torch.Tensor, path: Path) -> int:
    """The lexicon (distinct word keys, int64) and the lexicon index of every stored vector (int32) in one
    safetensors file; returns its bytes on disk."""
    lexicon, index = np.unique(keys.numpy(), return_inverse=True)
    with atomic_open(path, "wb") as handle:
        handle.write(safetensors_save({"lexicon": lexicon.astype(np.int64), "word_index": index.astype(np.int32)}))
    return path.stat().st_size


@dataclass
class Index:
    """A test-corpus index read back from disk, and its size."""

    docs: Representation
    bytes_by_part: dict[str, int]

    @property
    def bytes(self) -> int:
        return sum(self.bytes_by_part.values())


def build_index(task: ColBERTerTask, cache: PrefixCache, directory: Path) -> Index:
    """Encode the corpus, write its parts to `directory` and read them back (fp16) into one padded batch."""
    encoded = encode_all(task, cache, is_document=True)
    vectors = [rep.vectors[row][rep.mask[row]] for rep in encoded for row in range(rep.mask.shape[0])]
    keys = [rep.keys[row][rep.mask[row]] for rep in encoded for row in range(rep.mask.shape[0])]
    sizes: dict[str, int] = {}
    tokens = MultiVectorStore.from_sequences(vectors, codec="fp16")
    sizes["token vectors"] = tokens.save(directory / "tokens.safetensors")
    doc_vectors, doc_mask = MultiVectorStore.load(directory / "tokens.safetensors").gather()
    doc_keys = torch.full(doc_mask.shape, NO_WORD, dtype=torch.long)
    doc_keys[doc_mask] = torch.cat(keys)
    single = None
    if task.model.cls_dim > 0:
        singles = torch.cat([rep.single for rep in encoded])  # [N, cls_dim]
        store = MultiVectorStore.build(singles, [1] * singles.shape[0], codec="fp16")
        sizes["single vectors"] = store.save(directory / "single.safetensors")
        single = MultiVectorStore.load(directory / "single.safetensors").gather()[0][:, 0]  # [N, cls_dim]
    if task.model.exact_match:
        sizes["word ids"] = write_word_ids(torch.cat(keys), directory / "word_ids.safetensors")
    return Index(Representation(single, doc_vectors, doc_mask, doc_keys, None), sizes)


def search(task: ColBERTerTask, queries: PrefixCache, index: Index, chunk: int = 32) -> dict[str, torch.Tensor]:
    """[Q, N] fused and single-vector scores of every query against every indexed document."""
    fused, single = [], []
    with torch.no_grad():
        for rep in encode_all(task, queries, is_document=False, chunk=chunk):
            scores = task.model.score(rep, index.docs)
            fused.append(scores["fused"])
            single.append(scores.get("single", scores["fused"]))
    return {"fused": torch.cat(fused), "single": torch.cat(single)}


def zero_shot_minilm(texts: Texts) -> dict[str, float]:
    """all-MiniLM-L6-v2 untouched (mean-pooled, cosine): where every variant starts from."""

    def embed(cache: PrefixCache) -> torch.Tensor:
        rows = []
        for start in range(0, len(cache), 64):
            batch = cache.batch(list(range(start, min(start + 64, len(cache)))))
            rows.append(mean_pool(batch["hidden"], batch["attention_mask"]))
        return torch.cat(rows)

    scores = cosine_scores(embed(texts.test_queries), embed(texts.test_docs))
    return retrieval_metrics(scores, texts.test.relevance())


def evaluate(setting: Setting, texts: Texts, variant: str, seed: int) -> dict[str, float]:
    task = train(setting, texts, variant, seed)
    relevance = texts.test.relevance()
    with tempfile.TemporaryDirectory(prefix="colberter-index-") as directory:
        index = build_index(task, texts.test_docs, Path(directory))
    scores = search(task, texts.test_queries, index)
    metrics = retrieval_metrics(scores["fused"], relevance)
    documents = len(texts.test_docs)
    out = {
        "mrr@10": metrics["mrr@10"],
        "ndcg@10": metrics["ndcg@10"],
        "recall@100": metrics["recall@100"],
        "index bytes": float(index.bytes),
        "bytes per document": index.bytes / documents,
        "vectors per document": float(index.docs.mask.sum()) / documents,
        "subword tokens per document": sum(s.shape[0] for s in texts.test_docs.states) / documents,
    }
    for part, size in index.bytes_by_part.items():
        out[f"{part} bytes"] = float(size)
    if task.model.cls_dim > 0:
        out["single-vector only mrr@10"] = retrieval_metrics(scores["single"], relevance)["mrr@10"]
        out["score weight of the single vector"] = float(torch.sigmoid(task.model.score_merger.detach()))
    return out


def summarize(runs: list[dict[str, float]], seeds: Sequence[int]) -> dict[str, float]:
    """Means over seeds of every figure, the spread of MRR@10 / nDCG@10, and each seed's MRR@10."""
    out = {name: statistics.fmean(run[name] for run in runs) for name in runs[0]}
    for name in ("mrr@10", "ndcg@10"):
        out[f"{name} std"] = statistics.stdev(run[name] for run in runs) if len(runs) > 1 else 0.0
    for seed, run in zip(seeds, runs, strict=True):
        out[f"mrr@10 seed {seed}"] = run["mrr@10"]
    return out


def check(quick: bool = False) -> ClaimResult:
    for name in ("lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    setting = QUICK if quick else FULL
    with torch_threads(1):
        texts = prepare_texts(setting)
        results = {
            variant: summarize([evaluate(setting, texts, variant, seed) for seed in setting.seeds], setting.seeds)
            for variant in setting.variants
        }
        zero_shot = zero_shot_minilm(texts)
    method, baseline = results[METHOD], results[BASELINE]
    ratio = baseline["index bytes"] / method["index bytes"]
    method["storage ratio vs colbert_128"] = ratio
    drop = baseline["mrr@10"] - method["mrr@10"]
    criteria = [
        Criterion("index bytes: colbert_128 / colberter_32", ratio, ">=", 2.0),
        Criterion(f"MRR@10 drop colbert_128 - colberter_32 ({len(setting.seeds)} seeds)", drop, "<=", TOLERANCE),
    ]
    baselines = {name: figures for name, figures in results.items() if name != METHOD}
    baselines["minilm_zero_shot"] = {
        "mrr@10": zero_shot["mrr@10"],
        "ndcg@10": zero_shot["ndcg@10"],
        "recall@100": zero_shot["recall@100"],
        "bytes per document": 384 * 2.0,  # one fp16 384-d vector, for reference (not written)
    }
    curves = {"MRR@10 vs index bytes": sorted((r["index bytes"], r["mrr@10"]) for r in results.values())}
    curves |= {name: [(r["index bytes"], r["mrr@10"])] for name, r in results.items()}
    return ClaimResult(
        key="colberter",
        claim=(
            "ColBERTer's reductions (BOW^2 whole-word vectors, contextualised stopwords, 32-d tokens, plus a single "
            "vector) store an index at least 2x smaller than plain ColBERT token storage at about equal MRR@10, "
            "and degrade gracefully down to one dimension per word (Uni-ColBERTer)."
        ),
        paper_reported=(
            "MS MARCO / TREC-DL (abstract): the storage footprint reduced by up to 2.5x while maintaining "
            "effectiveness; with one dimension per token (Uni-ColBERTer) index storage on par with the plaintext "
            "size, with very strong effectiveness."
        ),
        decision_rule=(
            f"{METHOD}'s index (bytes on disk, single vectors included) is at least 2x smaller than {BASELINE}'s, "
            f"and its MRR@10 (mean over seeds) is at most {TOLERANCE} below {BASELINE}'s; same data, frozen encoder, "
            "training pairs, steps and seeds for every variant."
        ),
        method=method,
        baselines=baselines,
        criteria=criteria,
        curves=curves,
        plot={"xlabel": "index bytes on disk (test corpus)", "ylabel": "MRR@10", "xscale": "log"},
        config={
            "seeds": list(setting.seeds),
            "train_pairs": setting.train_pairs,
            "steps": setting.steps,
            "batch_size": setting.batch_size,
            "lr": setting.lr,
            "weight_decay": setting.weight_decay,
            "max_query_length": setting.max_query_length,
            "max_doc_length": setting.max_doc_length,
            "test_documents": len(texts.test_docs),
            "test_queries": len(texts.test_queries),
            "encoder": "all-MiniLM-L6-v2, frozen (trainable_layers=0); heads trained",
            "codec": "fp16",
            "variants": {name: VARIANTS[name] for name in setting.variants},
        },
    )
