"""The Matryoshka loss against a hand-written per-dimension loop, and its argument validation."""

import math

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.retrieval.dense.mrl.model import (
    SentenceEncoder,
    matryoshka_loss,
    matryoshka_losses,
    validate_dims,
    validate_weights,
)


def naive_contrastive(q: torch.Tensor, d: torch.Tensor, scale: float) -> float:
    """-mean_i log softmax_j(scale * cos(q_i, d_j))[i], written out with Python loops."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = []
        for j in range(d.shape[0]):
            cos = float(q[i] @ d[j]) / (float(q[i].norm()) * float(d[j].norm()))
            logits.append(scale * cos)
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        total += log_z - logits[i]
    return total / q.shape[0]


@pytest.mark.parametrize("extra_negatives", [0, 3])
def test_loss_equals_a_per_dimension_loop(extra_negatives):
    torch.manual_seed(0)
    q, d = torch.randn(6, 16, dtype=torch.float64), torch.randn(6 + extra_negatives, 16, dtype=torch.float64)
    dims, weights, scale = [16, 8, 4, 2], [1.0, 0.5, 2.0, 0.25], 20.0
    expected = sum(c * naive_contrastive(q[:, :m], d[:, :m], scale) for m, c in zip(dims, weights, strict=True))
    got = matryoshka_loss(q, d, dims, weights, scale=scale)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    per_dim = matryoshka_losses(q, d, dims, scale=scale)
    for value, m in zip(per_dim.tolist(), dims, strict=True):
        assert value == pytest.approx(naive_contrastive(q[:, :m], d[:, :m], scale), rel=1e-10)


def test_prefixes_are_renormalised_so_the_scale_of_the_tail_does_not_matter():
    torch.manual_seed(1)
    q, d = torch.randn(5, 8), torch.randn(5, 8)
    q_big_tail = q.clone()
    q_big_tail[:, 4:] *= 100.0
    # the 4-prefix loss sees only (normalised) q[:, :4], which the tail scaling leaves untouched
    assert matryoshka_losses(q, d, [4])[0].item() == pytest.approx(matryoshka_losses(q_big_tail, d, [4])[0].item())
    assert matryoshka_losses(q, d, [8])[0].item() != pytest.approx(matryoshka_losses(q_big_tail, d, [8])[0].item())


def test_default_weights_are_one_and_a_single_full_dim_is_the_plain_contrastive_loss():
    torch.manual_seed(2)
    q, d = torch.randn(4, 8), torch.randn(4, 8)
    assert matryoshka_loss(q, d, [8, 4]).item() == pytest.approx(matryoshka_losses(q, d, [8, 4]).sum().item())
    assert matryoshka_loss(q, d, [8]).item() == pytest.approx(naive_contrastive(q, d, 20.0), rel=1e-5)


def test_gradient_reaches_only_the_prefixes_that_are_trained():
    q, d = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    matryoshka_loss(q, d, [4, 2]).backward()
    assert q.grad[:, 4:].abs().max() == 0 and q.grad[:, :4].abs().max() > 0


@pytest.mark.parametrize(
    "dims, message",
    [([], "at least one"), ([8, 0], "positive"), ([9, 4], "exceed"), ([4, 8], "descending"), ([8, 8], "descending")],
)
def test_bad_dims_are_config_errors(dims, message):
    with pytest.raises(ConfigError, match=message):
        validate_dims(dims, 8)
    with pytest.raises(ConfigError):
        matryoshka_loss(torch.randn(2, 8), torch.randn(2, 8), dims)


def test_weights_validation():
    assert validate_weights(None, [8, 4]) == (1.0, 1.0)
    assert validate_weights([2, 0], [8, 4]) == (2.0, 0.0)
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ConfigError):
            validate_weights(bad, [8, 4])


def test_zero_weight_drops_a_dimension():
    torch.manual_seed(3)
    q, d = torch.randn(4, 8), torch.randn(4, 8)
    assert matryoshka_loss(q, d, [8, 4], [1.0, 0.0]).item() == pytest.approx(matryoshka_loss(q, d, [8]).item())


def test_sentence_encoder_projection_starts_as_the_identity():
    torch.manual_seed(0)
    plain = SentenceEncoder(trainable_layers=1, pretrained=False, num_layers=1).eval()
    projected = SentenceEncoder(trainable_layers=1, pretrained=False, num_layers=1, projection_dim=64).eval()
    projected.backbone.load_state_dict(plain.backbone.state_dict())
    ids, mask = torch.randint(1000, 2000, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    assert projected.dim == 64 and plain.dim == 384
    torch.testing.assert_close(projected(ids, mask), plain(ids, mask)[:, :64])
    with pytest.raises(ConfigError):
        SentenceEncoder(pretrained=False, num_layers=1, projection_dim=0)
