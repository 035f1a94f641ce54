"""Stationary representations with a d-Simplex fixed classifier, on the MiniLM sentence encoder.

Paper: Biondi, Pernici, Ricci, Del Bimbo, "Stationary Representations: Optimally Approximating Compatibility and
Implications for Improved Model Replacements", CVPR 2024, https://arxiv.org/abs/2405.02581.

The last layer of a classifier is frozen at the K vertices of a regular simplex (the "d-Simplex", K classes in
d >= K - 1 dimensions, every pair of class prototypes at the same angle, cosine -1/(K-1)). Features trained with
cross-entropy against these fixed prototypes converge towards the same targets whatever the network, its
initialisation or the data it saw: they are *stationary*. Two models trained this way, at different times, map a
class to the same direction, so a new model's queries can search a gallery indexed by an old model (compatibility)
and a model can be replaced by a better one without re-indexing the gallery.

What is here:
- `dsimplex(num_classes, dim)`: the K fixed prototypes (unit norm, pairwise cosine exactly -1/(K-1));
- `FixedSimplexClassifier`: logits = features @ prototypes^T with the prototypes in a buffer (never trained);
- `StationaryModel`: MiniLM (frozen lower layers, trainable top layers) -> mean pooling -> a linear projection to
  the feature space (d) -> the classifier (fixed d-Simplex, or a learnable linear layer: the baseline);
- `bct_influence_loss` and `synthesize_old_classifier`: the BCT baseline's influence loss (Shen et al., "Towards
  Backward-Compatible Representation Learning", CVPR 2020, https://arxiv.org/abs/2003.11942): cross-entropy of the
  new features through the frozen old classifier, whose rows for classes the old model never saw are the mean old
  features of those classes (BCT's synthesised classifier weights).

Deviations from the paper:
- the backbone is all-MiniLM-L6-v2 on text passages (the paper: ResNets on CIFAR/ImageNet images), classes are the
  source articles of the passages;
- the simplex is built from an orthonormal (Helmert) basis of the hyperplane orthogonal to (1, ..., 1) rather than
  the paper code's centred-identity construction; any two regular simplices differ by a rotation, which the network
  absorbs, and both give unit vectors at pairwise cosine -1/(K-1);
- classes take vertices in label order (the reference code counts them from the last vertex, which is the same up to
  a permutation of the fixed prototypes);
- the paper's d-Simplex-HOC adds a contrastive loss between old and new features; this module trains with the plain
  d-Simplex cross-entropy, which is what the paper's stationarity result is about.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.encoder import MiniLMEncoder, mean_pool

ClassifierKind = Literal["simplex", "learnable"]


def dsimplex(num_classes: int, dim: int | None = None) -> torch.Tensor:
    """The K vertices of a regular simplex centred at the origin, on the unit sphere of R^dim.

    The centred standard basis vectors e_i - 1/K lie in the (K-1)-dimensional hyperplane orthogonal to (1, ..., 1);
    scaled by sqrt(K/(K-1)) they have unit norm and pairwise inner product -1/(K-1). Their coordinates in an
    orthonormal basis of that hyperplane (the Helmert basis) give K points in R^(K-1); further dimensions are zero.

    Args:
        num_classes: K >= 2.
        dim: the feature dimension d >= K - 1 (default K - 1).

    Returns:
        [K, d] float32 prototypes, row i for class i.
    """
    if num_classes < 2:
        raise ConfigError(f"a d-Simplex needs at least 2 classes, got num_classes={num_classes}")
    dim = num_classes - 1 if dim is None else dim
    if dim < num_classes - 1:
        raise ConfigError(f"a d-Simplex of {num_classes} classes needs dim >= {num_classes - 1}, got dim={dim}")
    k = num_classes
    # Helmert basis of {x : sum(x) = 0}: column j (j = 1..K-1) is (1, ..., 1, -j, 0, ...) / sqrt(j (j + 1)),
    # with j ones before the -j.
    basis = torch.zeros(k, k - 1, dtype=torch.float64)
    for j in range(1, k):
        basis[:j, j - 1] = 1.0
        basis[j, j - 1] = -float(j)
        basis[:, j - 1] /= (j * (j + 1)) ** 0.5
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k  # [K, K], rows e_i - 1/K
    vertices = (k / (k - 1)) ** 0.5 * centred @ basis  # [K, K-1], unit rows
    padded = torch.zeros(k, dim, dtype=torch.float64)
    padded[:, : k - 1] = vertices
    return padded.float()


class FixedSimplexClassifier(nn.Module):
    """A linear classifier without bias whose weights are the d-Simplex prototypes, stored as a buffer (not a
    parameter: no optimizer ever sees it, and it is saved with the state dict).

    Args:
        num_classes: K.
        dim: feature dimension d >= K - 1.

    Shapes:
        features [B, d] -> logits [B, K].
    """

    weight: torch.Tensor

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("weight", dsimplex(num_classes, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


class StationaryModel(nn.Module):
    """MiniLM -> mean pooling -> linear projection to d dimensions -> a (fixed or learnable) classifier.

    The projection output is the representation that goes into the gallery index (L2-normalised by `embed`); the
    classifier only shapes it during training.

    Args:
        num_classes: K, the classes the classifier has room for (the paper pre-allocates them all at the first step).
        feature_dim: d (default K - 1, the smallest a d-Simplex allows, as in the paper).
        classifier: "simplex" (fixed d-Simplex prototypes) or "learnable" (a trained linear layer, the baseline).
        trainable_layers, pretrained, num_layers: the encoder, see `MiniLMEncoder`.
        encoder: an already built encoder to use instead (its own `trainable_layers` count); claim checks pass copies
            of one loaded encoder to avoid reading the weights for every model.

    Shapes:
        forward: input_ids, attention_mask [B, L] -> {"features": [B, d], "logits": [B, K]}.
        head: token states [B, L, 384] from `encoder.prefix` (or a `PrefixCache`), attention_mask [B, L] -> same.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int | None = None,
        classifier: ClassifierKind = "simplex",
        trainable_layers: int = 2,
        pretrained: bool = True,
        num_layers: int = 6,
        encoder: MiniLMEncoder | None = None,
    ):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        feature_dim = num_classes - 1 if feature_dim is None else feature_dim
        if classifier not in ("simplex", "learnable"):
            raise ConfigError(f"classifier must be 'simplex' or 'learnable', got {classifier!r}")
        self.num_classes, self.feature_dim, self.classifier_kind = num_classes, feature_dim, classifier
        self.encoder = encoder or MiniLMEncoder(trainable_layers, pretrained=pretrained, num_layers=num_layers)
        self.projection = nn.Linear(self.encoder.dim, feature_dim, bias=False)
        self.classifier: nn.Module = (
            FixedSimplexClassifier(num_classes, feature_dim)
            if classifier == "simplex"
            else nn.Linear(feature_dim, num_classes, bias=False)
        )

    @property
    def classifier_weight(self) -> torch.Tensor:
        """[K, d] class prototypes (fixed or learned)."""
        weight = self.classifier.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    def head(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.encoder.suffix(hidden, attention_mask)  # [B, L, 384]
        features = self.projection(mean_pool(tokens, attention_mask))  # [B, d]
        return {"features": features, "logits": self.classifier(features)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.encoder.prefix(input_ids, attention_mask), attention_mask)

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised features [B, d], what a gallery stores and a query searches with."""
        return F.normalize(self(input_ids, attention_mask)["features"], dim=-1)


def synthesize_old_classifier(
    old_weight: torch.Tensor, old_features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """BCT's old classifier extended to classes the old model never saw: the rows of classes >= len(old_weight) are
    the mean old-model features of their samples (zero for a class without samples).

    Args:
        old_weight: [K_old, d] the old model's classifier.
        old_features: [N, d] old-model features of the new training set.
        labels: [N] their classes.
        num_classes: K >= K_old, the rows of the result.

    Returns:
        [K, d].
    """
    known = old_weight.shape[0]
    if num_classes < known:
        raise ConfigError(f"num_classes ({num_classes}) must cover the old classifier's {known} classes")
    weight = torch.zeros(num_classes, old_weight.shape[1], dtype=old_weight.dtype)
    weight[:known] = old_weight
    sums = torch.zeros_like(weight).index_add_(0, labels, old_features.to(weight.dtype))
    counts = torch.bincount(labels, minlength=num_classes).to(weight.dtype)
    new = torch.arange(num_classes) >= known
    fill = new & (counts > 0)
    weight[fill] = sums[fill] / counts[fill, None]
    return weight


def bct_influence_loss(
    features: torch.Tensor, old_weight: torch.Tensor, labels: torch.Tensor, num_old_classes: int | None = None
) -> torch.Tensor:
    """BCT's influence loss: cross-entropy of the new model's features through the frozen old classifier.

    Args:
        features: [B, d] new-model features.
        old_weight: [K_old, d] the old classifier (no gradient flows into it).
        labels: [B] classes.
        num_old_classes: only samples with label < this count (default: all rows of `old_weight`).

    Returns:
        the mean over the samples whose class the old classifier covers (0 when there is none).
    """
    limit = old_weight.shape[0] if num_old_classes is None else num_old_classes
    keep = labels < limit
    if not bool(keep.any()):
        return features.sum() * 0.0
    logits = features[keep] @ old_weight.detach()[:limit].T  # [B_old, K_old]
    return F.cross_entropy(logits, labels[keep])
