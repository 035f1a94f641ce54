"""`MRLTask` on a random one-layer MiniLM: forward/backward, the baseline switch, validation, logging."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.dense.mrl.model import matryoshka_loss
from paperzoo.retrieval.dense.mrl.task import MRLTask
from paperzoo.retrieval.encoder import tokenize

QUERIES = ["history of the city", "early life", "climate of the region", "what the river is"]
DOCS = [
    "The city was founded in the twelfth century as a market town.",
    "He was born in a small village and studied law before turning to music.",
    "Summers are warm and dry; winters are mild with frequent rain.",
    "The river rises in the mountains and flows north into the sea.",
]


@pytest.fixture(scope="module")
def batch():
    return {"query": tokenize(QUERIES, 32), "doc": tokenize(DOCS, 64), "label": torch.full((4,), -1)}


def tiny_task(**kwargs):
    torch.manual_seed(0)
    return MRLTask(pretrained=False, num_layers=1, trainable_layers=1, **kwargs)


def test_forward_backward_and_the_loss_is_the_matryoshka_loss(batch):
    task = tiny_task(dims=[384, 96, 24], weights=[1.0, 0.5, 2.0]).eval()
    loss = task.step(batch, "train")
    q, d = task.encode(batch["query"]), task.encode(batch["doc"])
    assert q.shape == (4, 384)
    torch.testing.assert_close(loss, matryoshka_loss(q, d, [384, 96, 24], [1.0, 0.5, 2.0]))
    loss.backward()
    top = task.encoder.backbone.bert.encoder.layer[-1]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in top.parameters())
    assert all(p.grad is None for p in task.encoder.backbone.bert.embeddings.parameters())


def test_baseline_trains_the_full_embedding_only(batch):
    task = tiny_task(matryoshka=False).eval()
    q, d = task.encode(batch["query"]), task.encode(batch["doc"])
    torch.testing.assert_close(task.step(batch, "train"), matryoshka_loss(q, d, [384]))


def test_baseline_with_a_projection_and_dims_below_it_still_trains_the_whole_embedding(batch):
    task = tiny_task(matryoshka=False, projection_dim=64, dims=[32, 16]).eval()
    q, d = task.encode(batch["query"]), task.encode(batch["doc"])
    assert q.shape == (4, 64)
    torch.testing.assert_close(task.step(batch, "train"), matryoshka_loss(q, d, [64]))


def test_loss_drops_on_a_fixed_batch(batch):
    task = tiny_task(dims=[384, 48]).eval()  # no dropout: the drop is the optimizer's alone
    optimizer = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        before = float(task.step(batch, "train"))
    for _ in range(3):
        optimizer.zero_grad()
        task.step(batch, "train").backward()
        optimizer.step()
    with torch.no_grad():
        assert float(task.step(batch, "train")) < before


@pytest.mark.parametrize(
    "kwargs", [dict(dims=[384, 512]), dict(dims=[96, 192]), dict(dims=[128], projection_dim=64), dict(weights=[1.0])]
)
def test_bad_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        tiny_task(**kwargs)


def test_predict_returns_query_and_document_embeddings(batch):
    out = tiny_task().eval().predict_step(batch, 0)
    assert out["query"].shape == (4, 384) and out["doc"].shape == (4, 384)
