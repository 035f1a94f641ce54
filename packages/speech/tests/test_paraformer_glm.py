"""The GLM sampler: the Hamming distance, exactly ceil(lambda * d) replacements at valid positions, and the mix."""

import math

import pytest
import torch

from paperzoo.speech.paraformer.glm import glancing_count, glancing_embeddings, glancing_mask, hamming_distance


def test_hamming_distance_ignores_padding():
    targets = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 9]])
    predictions = torch.tensor([[5, 0, 7, 0], [4, 6, 0, 0]])
    assert hamming_distance(predictions, targets, torch.tensor([4, 2])).tolist() == [2, 1]


@pytest.mark.parametrize(
    ("distance", "ratio", "expected"),
    [(0, 0.5, 0), (1, 0.5, 1), (3, 0.5, 2), (4, 0.75, 3), (5, 0.75, 4), (30, 0.1, 3), (7, 1.0, 7), (7, 0.0, 0)],
)
def test_count_is_ceil_of_ratio_times_distance(distance, ratio, expected):
    assert glancing_count(torch.tensor([distance]), ratio).item() == expected == math.ceil(round(distance * ratio, 9))


def test_mask_replaces_exactly_the_count_at_valid_positions():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(3, 20, (64, 12), generator=generator)
    lengths = torch.randint(1, 13, (64,), generator=generator)
    predictions = torch.where(torch.rand(64, 12, generator=generator) < 0.4, targets, targets + 1)
    for ratio in (0.3, 0.5, 1.0):
        mask = glancing_mask(predictions, targets, lengths, ratio, generator)
        distance = hamming_distance(predictions, targets, lengths)
        pairs = zip(distance.tolist(), lengths.tolist(), strict=True)
        expected = [min(math.ceil(round(ratio * d, 9)), n) for d, n in pairs]
        assert mask.sum(1).tolist() == expected
        assert not (mask & (torch.arange(12)[None] >= lengths[:, None])).any()


def test_positions_are_uniform_over_the_utterance():
    # One wrong token out of 4 with lambda = 1: one position replaced, each of the 4 about a quarter of the time
    # (the sampler draws among all tokens, not only the wrong ones, as GLAT and FunASR do).
    generator = torch.Generator().manual_seed(1)
    targets = torch.tensor([[3, 4, 5, 6, 0, 0]]).repeat(4000, 1)
    predictions = targets.clone()
    predictions[:, 0] = 9
    mask = glancing_mask(predictions, targets, torch.full((4000,), 4), 1.0, generator)
    frequency = mask.float().mean(0)
    torch.testing.assert_close(frequency[:4], torch.full((4,), 0.25), atol=0.03, rtol=0)
    assert frequency[4:].sum() == 0


def test_embeddings_mix():
    acoustic = torch.zeros(1, 3, 2)
    semantic = torch.ones(1, 3, 2)
    mixed = glancing_embeddings(acoustic, semantic, torch.tensor([[True, False, True]]))
    assert mixed[0, :, 0].tolist() == [1.0, 0.0, 1.0]


def test_ratio_out_of_range():
    with pytest.raises(ValueError, match="lambda"):
        glancing_count(torch.tensor([1]), 1.5)
