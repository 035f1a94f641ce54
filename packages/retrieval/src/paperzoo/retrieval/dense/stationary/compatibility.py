"""Compatibility of representations across model updates: the formal criterion, the empirical criterion and the
metrics of Biondi et al., "Stationary Representations: Optimally Approximating Compatibility and Implications for
Improved Model Replacements", CVPR 2024 (https://arxiv.org/abs/2405.02581), which follow Shen et al., "Towards
Backward-Compatible Representation Learning", CVPR 2020 (https://arxiv.org/abs/2003.11942).

Notation: phi_t is the model after update step t; M(phi_a^Q, phi_b^G) is a retrieval metric of queries embedded by
phi_a searching a gallery embedded by phi_b (both L2-normalised, cosine similarity).

- Formal compatibility (the paper's Definition 1, the "two inequality constraints"): phi_new is compatible with
  phi_old if for all pairs (i, j)
      y_i == y_j  =>  d(phi_new(x_i), phi_old(x_j)) <= d(phi_old(x_i), phi_old(x_j))   (same class: no farther)
      y_i != y_j  =>  d(phi_new(x_i), phi_old(x_j)) >= d(phi_old(x_i), phi_old(x_j))   (other class: no closer)
  `pairwise_compatibility` measures the fraction of query-gallery pairs that satisfy each inequality.
- Empirical compatibility criterion (ECC, Shen et al.): M(phi_new^Q, phi_old^G) > M(phi_old^Q, phi_old^G), i.e.
  searching the old gallery with the new model beats the old model searching its own gallery.
  `empirical_compatibility` decides it; `ecc` is its relative margin
      ECC = (M(phi_new^Q, phi_old^G) - M(phi_old^Q, phi_old^G)) / M(phi_old^Q, phi_old^G),
  positive exactly when the criterion holds (the paper reports ECC for a pair of models; the reference code does
  not implement it, so this is the relative-gain form of the criterion).
- Over T steps the compatibility matrix C[t, k] = M(phi_t^Q, phi_k^G) for k <= t (NaN above the diagonal), and
      AC = 2 / (T (T - 1)) * sum_{t=2..T} sum_{k=1..t-1} 1[C[t, k] > C[k, k]]      (average compatibility)
      AM = 2 / (T (T + 1)) * sum_{t=1..T} sum_{k=1..t} C[t, k]                    (average multi-model accuracy)
  AC = 1 means every model is compatible with every earlier one.
- The metric M is the paper's 1:N search accuracy (`identification_accuracy`): each gallery class is represented
  by the normalised mean of its gallery features (a template), and a query is correct when the nearest template
  (cosine) is its class: top-1 identification. `mean_average_precision` (each gallery item ranked separately,
  relevant = same class) is the other standard retrieval metric of the compatibility literature.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional.retrieval import retrieval_average_precision

from paperzoo.core.errors import require

Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], float]


def class_templates(gallery: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised mean feature of each gallery class.

    Args:
        gallery: [N, d] features; labels: [N] classes.

    Returns:
        templates [C, d] (unit rows) and their classes [C] (sorted).
    """
    classes, index = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), gallery.shape[1], dtype=gallery.dtype).index_add_(
        0, index, F.normalize(gallery, dim=-1)
    )
    return F.normalize(sums, dim=-1), classes


def identification_accuracy(
    query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor
) -> float:
    """Top-1 1:N search accuracy against class templates (the paper's retrieval metric).

    Args:
        query: [Q, d]; query_labels: [Q]; gallery: [N, d]; gallery_labels: [N]. Features need not be normalised.
    """
    require(query.shape[1] == gallery.shape[1], f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    templates, classes = class_templates(gallery, gallery_labels)
    nearest = (F.normalize(query, dim=-1) @ templates.T).argmax(1)  # [Q]
    return float((classes[nearest] == query_labels).float().mean())


def mean_average_precision(
    query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor
) -> float:
    """mAP of ranking every gallery item by cosine similarity, relevant = same class (torchmetrics' AP per query).
    Queries without a relevant gallery item count as 0."""
    require(query.shape[1] == gallery.shape[1], f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    # cosine + 2 > 0: torchmetrics (1.9) treats items scored <= 0 as not retrieved, the ranking is unchanged
    scores = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T + 2.0  # [Q, N]
    relevant = query_labels[:, None] == gallery_labels[None, :]  # [Q, N]
    total = sum(float(retrieval_average_precision(scores[q], relevant[q])) for q in range(scores.shape[0]))
    return total / scores.shape[0]


def compatibility_matrix(
    query_features: Sequence[torch.Tensor],
    gallery_features: Sequence[torch.Tensor],
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    metric: Metric = identification_accuracy,
) -> torch.Tensor:
    """C[t, k] = M(phi_t^Q, phi_k^G) for k <= t, NaN above the diagonal.

    Args:
        query_features: per step t, [Q, d] the queries embedded by phi_t.
        gallery_features: per step k, [N, d] the gallery embedded by phi_k.
        query_labels: [Q]; gallery_labels: [N].
        metric: M(query, query_labels, gallery, gallery_labels).

    Returns:
        [T, T] float64.
    """
    steps = len(query_features)
    require(steps == len(gallery_features), f"{steps} query embeddings but {len(gallery_features)} galleries")
    matrix = torch.full((steps, steps), float("nan"), dtype=torch.float64)
    for t in range(steps):
        for k in range(t + 1):
            matrix[t, k] = metric(query_features[t], query_labels, gallery_features[k], gallery_labels)
    return matrix


def empirical_compatibility(matrix: torch.Tensor, new: int, old: int) -> bool:
    """The empirical compatibility criterion M(phi_new^Q, phi_old^G) > M(phi_old^Q, phi_old^G) (strict)."""
    require(0 <= old < new < matrix.shape[0], f"need 0 <= old < new < {matrix.shape[0]}, got old={old}, new={new}")
    return bool(matrix[new, old] > matrix[old, old])


def ecc(matrix: torch.Tensor, new: int, old: int) -> float:
    """Relative margin of the empirical compatibility criterion, (C[new, old] - C[old, old]) / C[old, old]; > 0
    exactly when the criterion holds."""
    require(0 <= old < new < matrix.shape[0], f"need 0 <= old < new < {matrix.shape[0]}, got old={old}, new={new}")
    require(bool(matrix[old, old] > 0), f"the old self-test M(phi_{old}, phi_{old}) is 0; ECC is undefined")
    return float((matrix[new, old] - matrix[old, old]) / matrix[old, old])


def average_compatibility(matrix: torch.Tensor) -> float:
    """AC: the fraction of pairs (t, k < t) that meet the empirical compatibility criterion."""
    steps = matrix.shape[0]
    require(steps >= 2, f"average compatibility needs at least 2 steps, got {steps}")
    met = sum(empirical_compatibility(matrix, t, k) for t in range(1, steps) for k in range(t))
    return met / (steps * (steps - 1) / 2)


def average_multimodel_accuracy(matrix: torch.Tensor) -> float:
    """AM: the mean of C[t, k] over k <= t (self and cross tests)."""
    steps = matrix.shape[0]
    rows, cols = torch.tril_indices(steps, steps)
    return float(matrix[rows, cols].mean())


def pairwise_compatibility(
    new_query: torch.Tensor,
    old_query: torch.Tensor,
    old_gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
) -> dict[str, float]:
    """The two inequalities of the formal definition, on every query-gallery pair (cosine distance on normalised
    features): the fraction of same-class pairs with d(new_i, old_j) <= d(old_i, old_j), and of different-class
    pairs with d(new_i, old_j) >= d(old_i, old_j).

    Args:
        new_query, old_query: [Q, d] the same queries embedded by phi_new and phi_old.
        old_gallery: [N, d] the gallery embedded by phi_old.
        query_labels: [Q]; gallery_labels: [N].

    Returns:
        {"same_class": fraction, "other_class": fraction}.
    """
    gallery = F.normalize(old_gallery, dim=-1)
    cross = 1.0 - F.normalize(new_query, dim=-1) @ gallery.T  # [Q, N] d(phi_new(x_i), phi_old(x_j))
    self_ = 1.0 - F.normalize(old_query, dim=-1) @ gallery.T  # [Q, N] d(phi_old(x_i), phi_old(x_j))
    same = query_labels[:, None] == gallery_labels[None, :]
    require(bool(same.any()) and bool((~same).any()), "need both same-class and different-class pairs")
    return {
        "same_class": float((cross <= self_)[same].float().mean()),
        "other_class": float((cross >= self_)[~same].float().mean()),
    }
