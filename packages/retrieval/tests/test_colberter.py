"""ColBERTer (CATALOG 33): BOW^2 pooling, the stopword gate, exact-match scoring and the fused score against hand
examples and naive loops; the task's forward/backward; MaxSim against pylate (peers); the quick claim check (slow)."""

import functools
import math

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.encoder import tokenize
from paperzoo.retrieval.late.colberter.model import (
    NO_WORD,
    ColBERTer,
    bow2_pool,
    colbert_baseline,
    exact_match_maxsim,
    uni_colberter,
    whole_word_keys,
)
from paperzoo.retrieval.late.colberter.task import ColBERTerTask, reciprocal_rank_of_diagonal

TINY = {"pretrained": False, "num_layers": 1, "trainable_layers": 1}


@functools.cache
def shared_model(kind: str = "colberter") -> ColBERTer:
    """One tiny model per kind for the tests that only read it (building one costs about a second)."""
    torch.manual_seed(0)
    build = {"colberter": ColBERTer, "colbert": colbert_baseline, "uni": uni_colberter}[kind]
    return build(**TINY).eval()


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models on a shared machine: a second OpenMP thread made these steps ~15x slower
    with torch_threads(1):
        yield


def test_whole_word_keys_identify_words_across_texts():
    #            [CLS] (5 6)  (7) (5 6) [SEP] pad      | [CLS] (7) (5 6) [SEP] ...
    input_ids = torch.tensor([[101, 5, 6, 7, 5, 6, 102, 0], [101, 7, 5, 6, 102, 0, 0, 0]])
    word_ids = torch.tensor([[-1, 0, 0, 1, 2, 2, -1, -1], [-1, 0, 1, 1, -1, -1, -1, -1]])
    keys = whole_word_keys(input_ids, word_ids)
    assert keys[0, 0] == NO_WORD and keys[0, 6] == NO_WORD and keys[1, 4] == NO_WORD
    assert keys[0, 1] == keys[0, 2] == keys[0, 4] == keys[0, 5] == keys[1, 2] == keys[1, 3]  # the word (5, 6)
    assert keys[0, 3] == keys[1, 1] != keys[0, 1]  # the word (7)


def test_bow2_pool_averages_subwords_and_deduplicates_repeated_words():
    input_ids = torch.tensor([[101, 5, 6, 7, 5, 6, 102, 0], [101, 8, 102, 0, 0, 0, 0, 0]])
    word_ids = torch.tensor([[-1, 0, 0, 1, 2, 2, -1, -1], [-1, 0, -1, -1, -1, -1, -1, -1]])
    vectors = torch.arange(2 * 8 * 3, dtype=torch.float).reshape(2, 8, 3) ** 1.5  # distinct, non-linear values
    keys = whole_word_keys(input_ids, word_ids)
    pooled, pooled_keys, mask = bow2_pool(vectors, keys)
    assert pooled.shape == (2, 2, 3)
    assert mask.tolist() == [[True, True], [True, False]]
    expected = {
        int(keys[0, 1]): (vectors[0, 1] + vectors[0, 2] + vectors[0, 4] + vectors[0, 5]) / 4,  # both occurrences
        int(keys[0, 3]): vectors[0, 3],
    }
    for slot in range(2):
        torch.testing.assert_close(pooled[0, slot], expected[int(pooled_keys[0, slot])])
    torch.testing.assert_close(pooled[1, 0], vectors[1, 1])
    assert pooled_keys[1, 1] == NO_WORD and pooled[1, 1].abs().sum() == 0


def test_bow2_pool_is_differentiable():
    vectors = torch.randn(1, 4, 2, requires_grad=True)
    keys = torch.tensor([[NO_WORD, 3, 3, 4]])
    pooled, _, _ = bow2_pool(vectors, keys)
    pooled.sum().backward()
    # each subword's gradient is 1 / (size of its word pool) per dimension; [CLS] gets none
    torch.testing.assert_close(vectors.grad[0, :, 0], torch.tensor([0.0, 0.5, 0.5, 1.0]))


def test_bow2_keeps_one_vector_per_unique_word_of_a_real_text():
    batch = tokenize(["Tokenization of tokenization is fun, tokenization!"], 32)
    with torch.no_grad():
        encoded = shared_model().encode(**batch, is_document=False)
    # words: tokenization (3 occurrences, 2 subwords each), of, is, fun, ",", "!"
    assert int(encoded.mask.sum()) == 6
    with torch.no_grad():
        tokens = shared_model("colbert").encode(**batch, is_document=True)
    assert int(tokens.mask.sum()) == int(batch["attention_mask"].sum()) == 13  # every subword, [CLS]/[SEP] included


def test_stopword_gate_scales_vectors_and_removes_words_at_index_time():
    torch.manual_seed(0)
    gated = ColBERTer(cls_dim=0, token_dim=4, **TINY).eval()
    ungated = ColBERTer(cls_dim=0, token_dim=4, stopwords=False, **TINY).eval()
    ungated.load_state_dict({k: v for k, v in gated.state_dict().items() if "stopword" not in k})
    with torch.no_grad():
        gated.stopword_gate.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))  # gate = relu(x_0)
        gated.stopword_gate.bias.zero_()
    batch = tokenize(["the cat sat on the mat near a very old dog"], 32)
    with torch.no_grad():
        plain = ungated.encode(**batch, is_document=True)
        train = gated.encode(**batch, is_document=True)
        index = gated.encode(**batch, is_document=True, remove_stopwords=True)
    gate = plain.vectors[..., 0].clamp_min(0) * plain.mask  # [1, W]
    torch.testing.assert_close(train.gate * train.mask, gate)
    torch.testing.assert_close(train.vectors, plain.vectors * gate.unsqueeze(-1))
    assert train.mask.equal(plain.mask)  # training keeps every word
    assert index.mask.equal(plain.mask & (plain.vectors[..., 0] > 0))  # indexing drops gate == 0
    assert 0 < int(index.mask.sum()) < int(plain.mask.sum())
    with torch.no_grad():
        queries = gated.encode(**batch, is_document=False)
    assert queries.gate is None and queries.mask.equal(plain.mask)  # queries are never gated


def test_stopword_gate_starts_open():
    assert shared_model().stopword_gate.bias.item() == 1.0


def test_exact_match_maxsim_on_a_hand_example():
    q_vectors, q_keys = torch.tensor([[[2.0], [-1.0], [3.0]]]), torch.tensor([[10, 20, 30]])
    docs = torch.tensor([[[1.5], [0.5], [4.0]], [[2.0], [0.0], [0.0]]])
    doc_keys = torch.tensor([[20, 10, 40], [30, NO_WORD, NO_WORD]])
    doc_mask = torch.tensor([[True, True, True], [True, False, False]])
    got = exact_match_maxsim(q_vectors, torch.ones(1, 3, dtype=torch.bool), q_keys, docs, doc_mask, doc_keys)
    # doc 0: word 10 matches (2 * 0.5 = 1); word 20 matches with -1.5, below the 0 of the non-matching words; 30: none
    # doc 1: only word 30 matches (3 * 2 = 6); the padded words do not count
    torch.testing.assert_close(got, torch.tensor([[1.0, 6.0]]))


def naive_maxsim(queries, query_mask, docs, doc_mask, query_keys=None, doc_keys=None):
    scores = torch.zeros(queries.shape[0], docs.shape[0])
    for q in range(queries.shape[0]):
        for n in range(docs.shape[0]):
            total = 0.0
            for i in range(queries.shape[1]):
                if not query_mask[q, i]:
                    continue
                best = -math.inf
                for j in range(docs.shape[1]):
                    if not doc_mask[n, j]:
                        continue
                    same = query_keys is None or query_keys[q, i] == doc_keys[n, j]
                    best = max(best, float(queries[q, i] @ docs[n, j]) if same else 0.0)
                total += 0.0 if best == -math.inf else best
            scores[q, n] = total
    return scores


def test_token_scores_equal_a_naive_loop():
    torch.manual_seed(0)
    queries = tokenize(["what is a cat", "history of the roman empire"], 16)
    docs = tokenize(["the cat is a small animal", "rome was an empire", "cats and dogs, cats and mice"], 32)
    for model in map(shared_model, ("colberter", "colbert", "uni")):
        with torch.no_grad():
            q = model.encode(**queries, is_document=False)
            d = model.encode(**docs, is_document=True, remove_stopwords=True)
            got = model.token_scores(q, d)
        keys = (q.keys, d.keys) if model.exact_match else (None, None)
        expected = naive_maxsim(q.vectors, q.mask, d.vectors, d.mask, *keys)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_uni_colberter_stores_one_dimension_and_scores_only_exact_matches():
    model = shared_model("uni")
    with torch.no_grad():
        q = model.encode(**tokenize(["zebra"], 8), is_document=False)
        d = model.encode(**tokenize(["giraffe elephant"], 8), is_document=True)
        scores = model.score(q, d)
    assert d.vectors.shape[-1] == 1
    assert scores["tokens"].item() == 0.0  # no shared word, no token score


def test_fused_score_is_the_learned_convex_combination():
    model = ColBERTer(**TINY).eval()
    with torch.no_grad():
        model.score_merger.fill_(0.7)
        q = model.encode(**tokenize(["what is a cat", "roman empire"], 16), is_document=False)
        d = model.encode(**tokenize(["the cat is a small animal", "rome was an empire"], 32), is_document=True)
        scores = model.score(q, d)
    weight = 1 / (1 + math.exp(-0.7))
    torch.testing.assert_close(scores["single"], model.single_scale * q.single @ d.single.T)
    torch.testing.assert_close(scores["fused"], weight * scores["single"] + (1 - weight) * scores["tokens"])
    assert "single" not in shared_model("colbert").score(q._replace(single=None), d._replace(single=None))


def test_reciprocal_rank_of_diagonal():
    scores = torch.tensor([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0]])  # query 0 ranks its own first, query 1 second
    assert reciprocal_rank_of_diagonal(scores).item() == pytest.approx((1 + 1 / 2) / 2)


def pair_batch() -> dict:
    queries = ["what is a cat", "history of the roman empire", "how do plants grow", "who wrote hamlet"]
    docs = [
        "the cat is a small domesticated carnivorous mammal",
        "the roman empire ruled the mediterranean for centuries",
        "plants grow by photosynthesis, using light water and carbon dioxide",
        "hamlet is a tragedy written by william shakespeare",
    ]
    return {"query": tokenize(queries, 16), "doc": tokenize(docs, 32), "label": torch.full((4,), -1)}


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"cls_dim": 0, "token_dim": 16, "bow2": False, "stopwords": False},
        {"token_dim": 8, "stored_dim": 1, "exact_match": True},
    ],
    ids=["colberter", "colbert", "uni"],
)
def test_task_forward_backward_and_loss_drops(variant):
    torch.manual_seed(0)
    task = ColBERTerTask(**TINY, **variant)
    batch = pair_batch()
    out = task.losses(batch)
    assert torch.isfinite(out["loss"])
    expected = out["fused"] + 0.1 * out.get("single", 0) + 0.1 * out.get("tokens", 0) + 0.75 * out.get("sparsity", 0)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    grads = {name: p.grad for name, p in task.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    assert grads["model.token_projection.weight"].abs().sum() > 0
    optimizer = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    before = float(out["loss"].detach())
    for _ in range(8):
        optimizer.zero_grad()
        task.losses(batch)["loss"].backward()
        optimizer.step()
    assert float(task.losses(batch)["loss"].detach()) < before


def test_sparsity_loss_is_the_mean_gate_of_real_document_words():
    task = ColBERTerTask(**TINY).eval()  # no dropout: both calls see the same gates
    batch = pair_batch()
    out = task.losses(batch)
    docs = task.encode(batch["doc"], is_document=True)
    torch.testing.assert_close(out["sparsity"], docs.gate[docs.mask].mean())


def test_predict_counts_stored_vectors():
    task = ColBERTerTask(**TINY).eval()
    with torch.no_grad():
        out = task.predict_step(pair_batch(), 0)
    assert (out["stored_vectors"] < out["subword_tokens"]).all()  # BOW^2 drops [CLS], [SEP], repeats and subwords


@pytest.mark.parametrize(
    "bad",
    [{"cls_dim": -1}, {"token_dim": 0}, {"stored_dim": 0}, {"cls_pooling": "max"}, {"sparsity_weight": -1.0}],
)
def test_bad_arguments_are_config_errors(bad):
    with pytest.raises(ConfigError):
        ColBERTerTask(**TINY, **bad)


def test_a_batch_without_word_ids_is_a_config_error():
    task = ColBERTerTask(**TINY)
    batch = pair_batch()
    del batch["doc"]["word_ids"]
    with pytest.raises(ConfigError, match="word_ids"):
        task.losses(batch)


@pytest.mark.peers
def test_maxsim_equals_pylate_colbert_scores():
    scores = pytest.importorskip("pylate.scores")
    torch.manual_seed(0)
    model = shared_model("colbert")
    with torch.no_grad():
        q = model.encode(**tokenize(["what is a cat", "roman empire history"], 16), is_document=False)
        d = model.encode(**tokenize(["the cat is small", "rome was an empire", "plants"], 32), is_document=True)
        ours = model.token_scores(q, d)
    theirs = scores.colbert_scores(q.vectors, d.vectors, q.mask.float(), d.mask.float(), backend="torch")
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-4)


def test_normalized_vectors_have_unit_length_and_the_single_score_is_a_scaled_cosine():
    model = shared_model()
    with torch.no_grad():
        q = model.encode(**tokenize(["what is a cat"], 16), is_document=False)
        d = model.encode(**tokenize(["the cat is a small animal"], 32), is_document=True)
        single = model.single_scores(q, d)
    torch.testing.assert_close(q.vectors[q.mask].norm(dim=-1), torch.ones(int(q.mask.sum())))
    torch.testing.assert_close(single, 20.0 * q.single @ d.single.T)
    torch.testing.assert_close(q.single.norm(dim=-1), torch.ones(1))


@pytest.mark.slow
def test_quick_claim_check_runs_and_reports_storage():
    from paperzoo.core.checks import run_check
    from paperzoo.retrieval.late.colberter.card import CARD
    from paperzoo.retrieval.late.colberter.check import check

    assert CARD.key == "colberter" and CARD.number == 33 and CARD.kind == "train"
    result = run_check(check, quick=True)
    assert result.key == "colberter" and len(result.criteria) == 2
    assert result.method["storage ratio vs colbert_128"] >= 2.0  # storage is a property of the representation
    assert result.baselines["uni_colberter_1"]["bytes per document"] < result.method["bytes per document"]
    assert all(math.isfinite(result.method[name]) for name in ("mrr@10", "ndcg@10", "index bytes"))
