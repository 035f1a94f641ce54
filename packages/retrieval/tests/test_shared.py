"""The shared retrieval building blocks against naive references and hand-computed values."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.retrieval.data.benchmark import RetrievalBenchmark
from paperzoo.retrieval.encoder import MiniLMEncoder, PrefixCache, mean_pool, tokenize
from paperzoo.retrieval.late.scoring import maxsim
from paperzoo.retrieval.losses import cosine_scores, in_batch_contrastive
from paperzoo.retrieval.metrics import retrieval_metrics


def test_metrics_match_hand_computation():
    inf = float("-inf")
    scores = torch.tensor([[3.0, 2.0, 1.0, inf], [1.0, 2.0, 3.0, 4.0]])
    relevance = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0]])
    got = retrieval_metrics(scores, relevance, recall_at=(1, 2))
    # query 1: its document at rank 2; query 2: at rank 4
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert got["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / 2)
    assert got["recall@1"] == 0.0 and got["recall@2"] == 0.5


def test_metrics_rank_unretrieved_documents_last():
    # the only relevant document was not retrieved: it must not count even though all others are -inf too
    scores = torch.tensor([[1.0, float("-inf"), float("-inf")]])
    got = retrieval_metrics(scores, torch.tensor([[0, 0, 1]]), recall_at=(1,))
    assert got["recall@1"] == 0.0 and got["mrr@10"] <= 1 / 2 and got["ndcg@10"] < 1.0


def test_metrics_need_a_relevant_document_per_query():
    with pytest.raises(ValueError, match="at least one relevant"):
        retrieval_metrics(torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]))


def test_maxsim_equals_a_naive_loop():
    generator = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(3, 4, 8, generator=generator), torch.randn(5, 6, 8, generator=generator)
    query_mask, doc_mask = torch.ones(3, 4), torch.ones(5, 6)
    query_mask[2, 3:] = 0
    doc_mask[0, 2:] = 0
    expected = torch.zeros(3, 5)
    for q in range(3):
        for n in range(5):
            sims = queries[q, query_mask[q].bool()] @ docs[n, doc_mask[n].bool()].T
            expected[q, n] = sims.max(1).values.sum()
    torch.testing.assert_close(maxsim(queries, query_mask, docs, doc_mask, chunk=2), expected)


def test_in_batch_contrastive_is_cross_entropy_on_the_diagonal():
    scores = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    expected = -(torch.log_softmax(scores[0], 0)[0] + torch.log_softmax(scores[1], 0)[1]) / 2
    torch.testing.assert_close(in_batch_contrastive(scores), expected)
    torch.testing.assert_close(
        cosine_scores(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])), torch.tensor([[12.0]])
    )


def test_benchmark_validates_qrels_and_builds_relevance():
    bench = RetrievalBenchmark("t", {"d1": "a", "d2": "b"}, {"q1": "x", "q2": "y"}, {"q1": {"d2": 1}, "q2": {"d1": 2}})
    assert bench.relevance().tolist() == [[0, 1], [2, 0]]
    assert bench.pairs() == [("x", "b"), ("y", "a")]
    with pytest.raises(DataError, match="'q2' has no relevant"):
        RetrievalBenchmark("t", {"d1": "a"}, {"q1": "x", "q2": "y"}, {"q1": {"d1": 1}})
    with pytest.raises(DataError, match="document 'd9'"):
        RetrievalBenchmark("t", {"d1": "a"}, {"q1": "x"}, {"q1": {"d9": 1}})


def test_tokenize_marks_whole_words():
    batch = tokenize(["unbelievably short", "a"], max_length=16)
    words = batch["word_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert words[0] == -1 and words[-1] == -1  # [CLS], [SEP]
    assert words[1:-1] == sorted(words[1:-1]) and set(words[1:-1]) == {0, 1}  # subwords of word 0, then word 1
    assert batch["word_ids"][1, 3:].eq(-1).all()  # padding


def test_encoder_prefix_suffix_is_the_whole_bert_and_freezes_the_prefix():
    torch.manual_seed(0)
    encoder = MiniLMEncoder(trainable_layers=1, pretrained=False, num_layers=2).eval()
    batch = tokenize(["a longer sentence here", "short"], max_length=16)
    with torch.no_grad():
        reference = encoder.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    tokens = encoder(batch["input_ids"], batch["attention_mask"])
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(tokens[mask], reference[mask])
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("bert.encoder.layer.1.") for n in trainable)
    with pytest.raises(ConfigError, match="trainable_layers"):
        MiniLMEncoder(trainable_layers=3, pretrained=False, num_layers=2)


def test_prefix_cache_feeds_the_suffix_like_the_full_forward():
    torch.manual_seed(0)
    encoder = MiniLMEncoder(trainable_layers=1, pretrained=False, num_layers=2).eval()
    texts = ["one two three four", "five"]
    cache = PrefixCache(encoder, texts, max_length=16)
    cached = cache.batch([1, 0])
    batch = tokenize([texts[1], texts[0]], max_length=16)
    with torch.no_grad():
        direct = mean_pool(encoder(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"])
        via_cache = mean_pool(encoder.suffix(cached["hidden"], cached["attention_mask"]), cached["attention_mask"])
    torch.testing.assert_close(via_cache, direct, atol=2e-3, rtol=0)  # the cache stores fp16
    assert torch.equal(
        cached["input_ids"][cached["attention_mask"].bool()], batch["input_ids"][batch["attention_mask"].bool()]
    )


def test_pretrained_encoder_reproduces_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from paperzoo.retrieval.encoder import minilm_path

    texts = ["The quick brown fox jumps over the lazy dog.", "hi"]
    reference = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu").encode(
        texts, convert_to_tensor=True
    )
    encoder = MiniLMEncoder(trainable_layers=0).eval()
    batch = tokenize(texts, max_length=64)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(
            mean_pool(encoder(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"]), dim=-1
        )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
