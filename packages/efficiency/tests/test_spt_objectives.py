"""Self-pretraining objectives (arXiv:2310.02980) checked by hand: masking rate, padding, loss positions, the shift."""

import pytest
import torch
import torch.nn.functional as F

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.spt.objectives import causal_targets, content_seed, denoising_loss, mask_tokens
from paperzoo.efficiency.sequence.task import IGNORE_INDEX

MASK = 9


def padded_tokens(batch: int = 64, length: int = 400, vocab: int = 9, seed: int = 0) -> torch.Tensor:
    """Random real ids 1..vocab-1, each row padded (0) after a random length."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (batch, length), generator=generator)
    lengths = torch.randint(length // 4, length + 1, (batch,), generator=generator)
    return tokens.masked_fill(torch.arange(length) >= lengths[:, None], 0)


def test_masking_rate_padding_and_replacement():
    tokens = padded_tokens()
    real = tokens != 0
    for rate in (0.15, 0.5):
        inputs, targets, masked = mask_tokens(tokens, MASK, rate, torch.Generator().manual_seed(1))
        assert not masked[~real].any(), "padding was masked"
        share = masked[real].float().mean().item()
        # ~15k real tokens: the binomial standard deviation of the share is < 0.005
        assert abs(share - rate) < 0.02, f"masked {share:.3f} of the real tokens, expected {rate}"
        assert (inputs[masked] == MASK).all() and torch.equal(inputs[~masked], tokens[~masked])
        assert torch.equal(targets[masked], tokens[masked]) and (targets[~masked] == IGNORE_INDEX).all()


def test_masking_by_hand_and_reproducible():
    tokens = torch.tensor([[3, 1, 4, 1, 5, 0, 0]])
    draws = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(7))
    inputs, targets, masked = mask_tokens(tokens, MASK, 0.5, torch.Generator().manual_seed(7))
    expected = [bool(d < 0.5) and t != 0 for d, t in zip(draws[0].tolist(), tokens[0].tolist(), strict=True)]
    assert masked[0].tolist() == expected
    assert inputs[0].tolist() == [MASK if m else t for m, t in zip(expected, tokens[0].tolist(), strict=True)]
    assert targets[0].tolist() == [t if m else IGNORE_INDEX for m, t in zip(expected, tokens[0].tolist(), strict=True)]
    again = mask_tokens(tokens, MASK, 0.5, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(again, (inputs, targets, masked), strict=True))


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1])
def test_masking_rate_out_of_range(rate):
    with pytest.raises(ConfigError, match="mask rate"):
        mask_tokens(torch.ones(2, 3, dtype=torch.long), MASK, rate)


def test_causal_targets_shifted_by_one_and_padding_ignored():
    tokens = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 8]])
    assert causal_targets(tokens).tolist() == [[6, 7, -100, -100, -100], [2, 3, 4, 8, -100]]
    pairs = tokens.view(1, 2, 5)  # any leading shape
    assert causal_targets(pairs).view(2, 5).tolist() == causal_targets(tokens).tolist()


def test_loss_only_on_scored_positions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, generator=generator, requires_grad=True)
    targets = torch.tensor([[2, -100, -100, 4, -100, 1], [-100, -100, 8, -100, -100, -100]])
    loss = denoising_loss(logits, targets)
    by_hand = [
        -F.log_softmax(logits[b, i], -1)[targets[b, i]] for b in range(2) for i in range(6) if targets[b, i] != -100
    ]
    assert torch.allclose(loss, torch.stack(by_hand).mean())
    loss.backward()
    unscored = targets == IGNORE_INDEX
    assert (logits.grad[unscored] == 0).all() and (logits.grad[~unscored].abs().sum(-1) > 0).all()


def test_loss_without_targets_is_zero_not_nan():
    logits = torch.randn(1, 4, 5, requires_grad=True)
    loss = denoising_loss(logits, torch.full((1, 4), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_content_seed_depends_on_the_tokens_only():
    a = torch.tensor([[1, 2, 3]])
    assert content_seed(a) == content_seed(a.clone())
    assert content_seed(a) != content_seed(torch.tensor([[3, 2, 1]]))
    assert content_seed(a, 1) != content_seed(a, 0)
