"""Our Matryoshka loss equals sentence-transformers' `MatryoshkaLoss(MultipleNegativesRankingLoss)` on the same
batch: the same value and the same gradients in the encoder (all-MiniLM-L6-v2, dropout off)."""

import pytest
import torch

from paperzoo.retrieval.dense.mrl.model import matryoshka_loss
from paperzoo.retrieval.encoder import minilm_path

QUERIES = ["history of the city", "early life", "climate of the region", "what the river is", "sports clubs"]
DOCS = [
    "The city was founded in the twelfth century as a market town.",
    "He was born in a small village and studied law before turning to music.",
    "Summers are warm and dry; winters are mild with frequent rain.",
    "The river rises in the mountains and flows north into the sea.",
    "The football club plays in the second division.",
    "A hard negative about the history of a different town.",  # an extra column: a negative for every query
]


@pytest.mark.peers
@pytest.mark.parametrize("dims, weights", [((384, 192, 96, 48, 24), None), ((384, 64, 8), (1.0, 0.5, 2.0))])
def test_loss_and_gradients_equal_sentence_transformers(dims, weights):
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    model.eval()  # no dropout: both sides see identical embeddings
    anchors = model.preprocess(QUERIES)
    positives = model.preprocess(DOCS[: len(QUERIES)])
    negatives = model.preprocess(DOCS[len(QUERIES) :] * len(QUERIES))  # one hard negative per anchor
    features = [anchors, positives, negatives]
    peer = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model, scale=20.0), list(dims), weights)

    model.zero_grad()
    expected = peer(features, None)
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    queries = model(anchors)["sentence_embedding"]
    documents = torch.cat([model(f)["sentence_embedding"] for f in features[1:]])  # [B + B, D]
    ours = matryoshka_loss(queries, documents, dims, weights, scale=20.0)
    ours.backward()

    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert expected_grads
    for name, grad in expected_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-4)
