"""StationaryTask on the datamodule's batch contract, with a small random MiniLM (pretrained=False)."""

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.core.testing.conformance import check_forward_backward, check_loss_drops
from paperzoo.retrieval.dense.stationary.model import bct_influence_loss, dsimplex
from paperzoo.retrieval.dense.stationary.task import StationaryTask, classification_loss
from paperzoo.retrieval.losses import cosine_scores, in_batch_contrastive


def small_task(**kwargs):
    torch.manual_seed(0)
    return StationaryTask(num_groups=4, pretrained=False, num_layers=1, trainable_layers=1, **kwargs)


def batch(labels=(0, 1, 2, 3)):
    generator = torch.Generator().manual_seed(0)
    size = len(labels)

    def tokens(length):
        ids = torch.randint(1000, 3000, (size, length), generator=generator)
        mask = torch.ones(size, length, dtype=torch.long)
        mask[0, length - 2 :] = 0
        return {"input_ids": ids, "attention_mask": mask, "word_ids": torch.zeros(size, length, dtype=torch.long)}

    return {"query": tokens(5), "doc": tokens(9), "label": torch.tensor(labels)}


def test_forward_backward_and_loss_drops():
    check_forward_backward(small_task(classifier="learnable"), batch())
    task = small_task(classifier="simplex")
    check_forward_backward(task, batch())
    check_loss_drops(task, batch(), steps=10)


def test_train_loss_is_cross_entropy_through_the_fixed_simplex():
    task = small_task().eval()  # no dropout: the reference forward must see the same network
    data = batch()
    features = task.model(data["doc"]["input_ids"], data["doc"]["attention_mask"])["features"]
    expected = F.cross_entropy(features @ dsimplex(4).T, data["label"])
    torch.testing.assert_close(task.step(data, "train"), expected)
    assert task.model.feature_dim == 3 and not any("classifier" in n for n, _ in task.named_parameters())


def test_unlabelled_passages_are_ignored():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, -1, 1])
    expected = F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    assert float(classification_loss(logits, torch.tensor([-1, -1, -1]))) == 0.0
    with pytest.raises(ConfigError, match="outside"):
        classification_loss(logits, torch.tensor([0, 1, 2]))


def test_validation_is_in_batch_retrieval_of_queries_against_passages():
    task = small_task().eval()
    data = batch(labels=(-1, -1, -1, -1))  # dev articles: classes the classifier never saw
    queries = task.model(data["query"]["input_ids"], data["query"]["attention_mask"])["features"]
    docs = task.model(data["doc"]["input_ids"], data["doc"]["attention_mask"])["features"]
    torch.testing.assert_close(task.step(data, "val"), in_batch_contrastive(cosine_scores(queries, docs)))


def test_predict_returns_normalised_embeddings():
    task = small_task()
    out = task.predict_step(batch(), 0)
    assert out["doc_embedding"].shape == (4, 3) and out["query_embedding"].shape == (4, 3)
    torch.testing.assert_close(out["doc_embedding"].norm(dim=-1), torch.ones(4))


def test_bct_needs_an_old_checkpoint():
    with pytest.raises(ConfigError, match="old_checkpoint"):
        small_task(classifier="learnable", bct_weight=1.0)
    with pytest.raises(ConfigError, match="bct_weight"):
        small_task(bct_weight=-1.0)


def test_bct_reads_the_old_classifier_and_adds_the_influence_loss(tmp_path):
    old = small_task(classifier="learnable")
    with torch.no_grad():
        old.model.classifier.weight.copy_(torch.randn(4, 3))
        old.model.projection.weight.mul_(2.0)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old.state_dict()}, path)

    new = small_task(classifier="learnable", bct_weight=0.5, old_checkpoint=str(path)).eval()
    new.load_old_model(str(path))
    torch.testing.assert_close(new.old_classifier, old.model.classifier.weight)
    assert not torch.equal(new.model.projection.weight, old.model.projection.weight)  # a replacement: fresh weights
    data = batch()
    out = new.model(data["doc"]["input_ids"], data["doc"]["attention_mask"])
    expected = F.cross_entropy(out["logits"], data["label"]) + 0.5 * bct_influence_loss(
        out["features"], old.model.classifier.weight, data["label"]
    )
    torch.testing.assert_close(new.step(data, "train"), expected)
    state = new.state_dict()
    assert "old_classifier" in state  # a reloaded task needs no old checkpoint file

    tuned = small_task(classifier="learnable", old_checkpoint=str(path), init_from_old=True)
    tuned.load_old_model(str(path))
    for name, value in old.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[name], value)


def test_an_old_checkpoint_of_another_shape_is_a_config_error(tmp_path):
    other = StationaryTask(num_groups=6, pretrained=False, num_layers=1, trainable_layers=1)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict()}, path)
    task = small_task(bct_weight=1.0, old_checkpoint=str(path))
    with pytest.raises(ConfigError, match="same num_groups"):
        task.load_old_model(str(path))
