"""The d-Simplex, the fixed classifier, the BCT influence loss and the StationaryModel on a small random MiniLM."""

import math

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.dense.stationary.model import (
    FixedSimplexClassifier,
    StationaryModel,
    bct_influence_loss,
    dsimplex,
    synthesize_old_classifier,
)


@pytest.mark.parametrize(("classes", "dim"), [(2, 1), (3, 2), (5, 4), (10, 9), (7, 16), (100, 99)])
def test_dsimplex_is_a_regular_simplex(classes, dim):
    vertices = dsimplex(classes, dim).double()
    assert vertices.shape == (classes, dim)
    gram = vertices @ vertices.T
    expected = torch.full((classes, classes), -1.0 / (classes - 1), dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(gram, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(vertices.sum(0), torch.zeros(dim, dtype=torch.float64), atol=1e-6, rtol=0)


def test_dsimplex_hand_computed_cases():
    # K = 2: the two points +-1 on the line
    torch.testing.assert_close(dsimplex(2), torch.tensor([[1.0], [-1.0]]) * dsimplex(2)[0, 0].sign())
    # K = 3: an equilateral triangle on the unit circle, 120 degrees apart
    triangle = dsimplex(3).double()
    angles = torch.atan2(triangle[:, 1], triangle[:, 0])
    gaps = sorted(float((angles[i] - angles[j]) % (2 * math.pi)) for i in range(3) for j in range(3) if i != j)
    assert gaps == pytest.approx([2 * math.pi / 3] * 3 + [4 * math.pi / 3] * 3, abs=1e-6)
    # padding: extra dimensions are zero, the default dimension is K - 1
    assert dsimplex(4, 6)[:, 3:].abs().max() == 0
    assert dsimplex(4).shape == (4, 3)


def test_dsimplex_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="dim >= 4"):
        dsimplex(5, 3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        dsimplex(1)


def test_fixed_classifier_is_a_buffer_and_computes_inner_products():
    classifier = FixedSimplexClassifier(4, 5)
    assert list(classifier.parameters()) == []
    assert "weight" in classifier.state_dict()
    features = torch.randn(3, 5)
    torch.testing.assert_close(classifier(features), features @ dsimplex(4, 5).T)


def test_bct_influence_loss_against_hand_computation():
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    old = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 5])  # class 5 is unknown to the old classifier: ignored
    # sample 0: logits (1, 0), target 0 -> log(1 + e^-1); sample 1: logits (0, 2), target 1 -> log(1 + e^-2)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 2
    assert float(bct_influence_loss(features, old, labels)) == pytest.approx(expected, rel=1e-6)
    assert float(bct_influence_loss(features, old, torch.tensor([7, 8, 9]))) == 0.0


def test_bct_influence_loss_trains_features_not_the_old_classifier():
    features = torch.randn(4, 3, requires_grad=True)
    old = torch.randn(2, 3, requires_grad=True)
    bct_influence_loss(features, old, torch.tensor([0, 1, 0, 1])).backward()
    assert features.grad is not None and old.grad is None


def test_synthesize_old_classifier_fills_new_classes_with_mean_old_features():
    old_weight = torch.tensor([[1.0, 0.0]])
    old_features = torch.tensor([[2.0, 2.0], [4.0, 0.0], [9.0, 9.0]])
    labels = torch.tensor([1, 1, 0])  # class 0 is known: its row stays the old one
    weight = synthesize_old_classifier(old_weight, old_features, labels, num_classes=3)
    torch.testing.assert_close(weight, torch.tensor([[1.0, 0.0], [3.0, 1.0], [0.0, 0.0]]))


def small_model(classifier="simplex", classes=5, dim=None):
    torch.manual_seed(0)
    return StationaryModel(classes, dim, classifier=classifier, pretrained=False, num_layers=1, trainable_layers=1)


def tokens(batch=3, length=7):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 5:] = 0
    return ids, mask


def test_stationary_model_shapes_and_fixed_logits():
    model = small_model("simplex", classes=5).eval()  # no dropout, so that two forwards agree
    ids, mask = tokens()
    out = model(ids, mask)
    assert out["features"].shape == (3, 4) and out["logits"].shape == (3, 5)
    torch.testing.assert_close(out["logits"], out["features"] @ dsimplex(5).T)
    embedded = model.embed(ids, mask)
    torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(embedded, F.normalize(out["features"], dim=-1))


def test_simplex_prototypes_never_change_while_the_learnable_classifier_trains():
    ids, mask = tokens()
    labels = torch.tensor([0, 1, 2])
    for kind in ("simplex", "learnable"):
        model = small_model(kind)
        before = model.classifier_weight.detach().clone()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(model(ids, mask)["logits"], labels).backward()
            optimizer.step()
        changed = not torch.equal(before, model.classifier_weight)
        assert changed == (kind == "learnable")
        assert model.projection.weight.grad is not None


def test_model_rejects_a_feature_space_too_small_for_the_simplex():
    with pytest.raises(ConfigError, match="dim >= 4"):
        small_model("simplex", classes=5, dim=3)
    with pytest.raises(ConfigError, match="classifier"):
        StationaryModel(5, classifier="cosine", pretrained=False, num_layers=1, trainable_layers=1)  # type: ignore[arg-type]
