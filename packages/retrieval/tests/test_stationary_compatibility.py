"""Compatibility criteria and metrics on hand-made embeddings whose answers are known."""

import math

import pytest
import torch

from paperzoo.core.errors import UserError
from paperzoo.retrieval.dense.stationary.compatibility import (
    average_compatibility,
    average_multimodel_accuracy,
    class_templates,
    compatibility_matrix,
    ecc,
    empirical_compatibility,
    identification_accuracy,
    mean_average_precision,
    pairwise_compatibility,
)

NAN = float("nan")
# C[t, k] = M(phi_t queries, phi_k gallery): pairs (1,0) met, (2,0) not (0.4 < 0.5), (2,1) met
MATRIX = torch.tensor([[0.5, NAN, NAN], [0.6, 0.7, NAN], [0.4, 0.8, 0.9]], dtype=torch.float64)


def test_class_templates_are_normalised_means_of_normalised_features():
    gallery = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([4, 1, 4, 1])
    templates, classes = class_templates(gallery, labels)
    assert classes.tolist() == [1, 4]
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[s, 1 + s], [1.0, 1.0]])
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(templates, expected)


def test_identification_accuracy_by_hand():
    gallery = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.1, 1.0]])
    gallery_labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.2, 1.0], [0.0, 5.0]])  # correct, wrong (nearer class 1), correct
    query_labels = torch.tensor([0, 0, 1])
    assert identification_accuracy(query, query_labels, gallery, gallery_labels) == pytest.approx(2 / 3)


def test_identification_accuracy_with_non_contiguous_labels():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert identification_accuracy(gallery, torch.tensor([7, 3]), gallery, torch.tensor([7, 3])) == 1.0


def test_mean_average_precision_by_hand():
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # ranked in this order; relevant at ranks 1 and 3
    value = mean_average_precision(query, torch.tensor([0]), gallery, torch.tensor([0, 1, 0]))
    assert value == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_compatibility_matrix_fills_the_lower_triangle_with_the_metric():
    def metric(query, query_labels, gallery, gallery_labels):
        return float(query[0, 0] * 10 + gallery[0, 0])  # encodes (t, k)

    queries = [torch.full((1, 1), float(t)) for t in range(3)]
    galleries = [torch.full((1, 1), float(k)) for k in range(3)]
    matrix = compatibility_matrix(queries, galleries, torch.zeros(1), torch.zeros(1), metric)
    for t in range(3):
        for k in range(3):
            if k <= t:
                assert matrix[t, k] == 10 * t + k
            else:
                assert math.isnan(matrix[t, k])


def test_empirical_criterion_ecc_ac_am_by_hand():
    assert empirical_compatibility(MATRIX, new=1, old=0)
    assert not empirical_compatibility(MATRIX, new=2, old=0)
    assert empirical_compatibility(MATRIX, new=2, old=1)
    assert ecc(MATRIX, 1, 0) == pytest.approx(0.2)
    assert ecc(MATRIX, 2, 0) == pytest.approx(-0.2)
    assert ecc(MATRIX, 2, 1) == pytest.approx(0.1 / 0.7)
    assert average_compatibility(MATRIX) == pytest.approx(2 / 3)
    assert average_multimodel_accuracy(MATRIX) == pytest.approx((0.5 + 0.6 + 0.7 + 0.4 + 0.8 + 0.9) / 6)


def reference_style_ac(matrix: torch.Tensor) -> float:
    """AC counted the way the authors' code counts it: 1 - (incompatible pairs, C[i][j] <= C[j][j]) / pairs."""
    steps = matrix.shape[0]
    incompatible = sum(bool(matrix[i, j] <= matrix[j, j]) for j in range(steps) for i in range(j + 1, steps))
    return 1 - incompatible / (steps * (steps - 1) / 2)


def test_average_compatibility_matches_the_incompatible_pair_count_on_random_matrices():
    generator = torch.Generator().manual_seed(0)
    for steps in (2, 3, 5, 8):
        matrix = torch.rand(steps, steps, generator=generator, dtype=torch.float64).round(decimals=1).tril()
        assert average_compatibility(matrix) == pytest.approx(reference_style_ac(matrix))


def test_a_tie_does_not_meet_the_criterion():
    matrix = torch.tensor([[0.5, NAN], [0.5, 0.9]], dtype=torch.float64)
    assert not empirical_compatibility(matrix, 1, 0)
    assert average_compatibility(matrix) == 0.0
    assert ecc(matrix, 1, 0) == 0.0


def test_bad_step_indices_and_zero_old_accuracy_are_errors():
    with pytest.raises(UserError):
        empirical_compatibility(MATRIX, new=0, old=1)
    with pytest.raises(UserError):
        ecc(torch.tensor([[0.0, NAN], [0.3, 0.5]]), 1, 0)
    with pytest.raises(UserError):
        average_compatibility(torch.ones(1, 1))


def test_pairwise_inequalities_by_hand():
    old_query = torch.tensor([[1.0, 0.0]])
    old_gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels_q, labels_g = torch.tensor([0]), torch.tensor([0, 1])
    same = pairwise_compatibility(old_query, old_query, old_gallery, labels_q, labels_g)
    assert same == {"same_class": 1.0, "other_class": 1.0}  # identical models satisfy both (with equality)
    # the new query moved towards the other class: farther from its own (0.4 > 0) and closer to the other (0.2 < 1)
    moved = pairwise_compatibility(torch.tensor([[0.6, 0.8]]), old_query, old_gallery, labels_q, labels_g)
    assert moved == {"same_class": 0.0, "other_class": 0.0}
    # the new query sits on its class, the old one did not: nearer its own (0 <= 0.2), farther from the other (1 >= 0.4)
    new_query, off_query = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.8, 0.6]])
    exact = pairwise_compatibility(new_query, off_query, old_gallery, labels_q, labels_g)
    assert exact == {"same_class": 1.0, "other_class": 1.0}


def test_a_rotated_representation_is_incompatible_and_the_same_one_is_not_worse():
    """The failure the fixed classifier prevents: an equally good but rotated feature space cannot search the old
    gallery, while stationary features (same class directions, less noise) beat the old self-test."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:6] * 3  # 6 classes along axes
    labels = torch.arange(6).repeat_interleave(10)
    old_q = centres[labels] + torch.randn(60, 8, generator=generator) * 1.5
    old_g = centres[labels] + torch.randn(60, 8, generator=generator) * 1.5
    new_q = centres[labels] + torch.randn(60, 8, generator=generator) * 0.5  # a better model, same directions
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    rotated_q = new_q @ rotation
    matrix_stationary = compatibility_matrix([old_q, new_q], [old_g, old_g], labels, labels)
    matrix_rotated = compatibility_matrix([old_q, rotated_q], [old_g, old_g], labels, labels)
    assert empirical_compatibility(matrix_stationary, 1, 0)
    assert not empirical_compatibility(matrix_rotated, 1, 0)
