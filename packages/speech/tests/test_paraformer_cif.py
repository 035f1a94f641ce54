"""CIF: a hand-computed firing example (fractional carry-over across frames, the inference tail), a naive frame loop
as the reference, the training-time scaling to exactly N firings, and the quantity loss."""

import pytest
import torch

from paperzoo.speech.paraformer.cif import CIFPredictor, add_tail, cif, quantity_loss


def naive_cif(hidden: torch.Tensor, alphas: torch.Tensor, threshold: float = 1.0) -> list[torch.Tensor]:
    """The textbook loop, one utterance at a time: accumulate, and while the sum reaches the threshold, fire."""
    fired = []
    for h, a in zip(hidden, alphas, strict=True):
        tokens, integrate, frame = [], 0.0, torch.zeros(h.shape[1], dtype=h.dtype)
        for t in range(h.shape[0]):
            remaining = float(a[t])
            while integrate + remaining >= threshold - 1e-12:
                take = threshold - integrate
                tokens.append(frame + take * h[t])
                remaining -= take
                integrate, frame = 0.0, torch.zeros_like(frame)
            integrate += remaining
            frame = frame + remaining * h[t]
        fired.append(torch.stack(tokens) if tokens else torch.zeros(0, h.shape[1], dtype=h.dtype))
    return fired


def test_hand_computed_firing_with_carry_over():
    # cumulative weights 0.3 0.8 1.2 1.9 2.4 2.7: frame 2 fires token 0 and carries 0.2 into token 1, frame 4 fires
    # token 1 and carries 0.4; the last 0.7 stays unfired without a tail.
    alphas = torch.tensor([[0.3, 0.5, 0.4, 0.7, 0.5, 0.3]], dtype=torch.float64)
    hidden = torch.eye(6, dtype=torch.float64)[None]  # embedding row k = the weight of each frame in token k
    fired = cif(hidden, alphas)
    assert fired.lengths.tolist() == [2]
    expected = torch.tensor([[0.3, 0.5, 0.2, 0.0, 0.0, 0.0], [0.0, 0.0, 0.2, 0.7, 0.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(fired.embeddings[0], expected)
    torch.testing.assert_close(fired.integrate[0], torch.tensor([0.3, 0.8, 1.2, 0.9, 1.4, 0.7], dtype=torch.float64))


def test_tail_fires_a_large_residual_and_not_a_small_one():
    # Utterance 0 (6 frames) ends with 0.7 unfired: 0.7 + 0.45 >= 1 fires token 2 = 0.4 h4 + 0.3 h5 (+ 0.3 x zeros).
    # Utterance 1 (4 valid frames) ends with 0.5: 0.5 + 0.45 < 1, no extra token. The tail frame goes at index
    # length (4), not at the padded end.
    alphas = torch.tensor([[0.3, 0.5, 0.4, 0.7, 0.5, 0.3], [0.6, 0.6, 0.2, 0.1, 0.0, 0.0]], dtype=torch.float64)
    lengths = torch.tensor([6, 4])
    hidden = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    tail_hidden, tail_alphas = add_tail(hidden, alphas, lengths, 0.45)
    assert tail_hidden.shape == (2, 7, 6) and tail_hidden[:, 6].abs().sum() == 0
    torch.testing.assert_close(tail_alphas[1], torch.tensor([0.6, 0.6, 0.2, 0.1, 0.45, 0.0, 0.0], dtype=torch.float64))
    fired = cif(tail_hidden, tail_alphas)
    assert fired.lengths.tolist() == [3, 1]
    torch.testing.assert_close(fired.embeddings[0, 2], torch.tensor([0, 0, 0, 0, 0.4, 0.3], dtype=torch.float64))
    torch.testing.assert_close(fired.embeddings[1, 0], torch.tensor([0.6, 0.4, 0, 0, 0, 0], dtype=torch.float64))
    assert fired.embeddings[1, 1:].abs().sum() == 0  # padding past the count


def test_matches_naive_loop_including_frames_that_fire_twice():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 17, 5, generator=generator, dtype=torch.float64)
    for scale in (0.9, 2.5):  # weights < 1, then weights up to 2.5 (several firings in one frame)
        alphas = torch.rand(3, 17, generator=generator, dtype=torch.float64) * scale
        alphas[2, 12:] = 0  # a shorter utterance
        fired = cif(hidden, alphas)
        for b, tokens in enumerate(naive_cif(hidden, alphas)):
            assert fired.lengths[b] == len(tokens)
            torch.testing.assert_close(fired.embeddings[b, : len(tokens)], tokens)
            assert fired.embeddings[b, len(tokens) :].abs().sum() == 0


def test_threshold_other_than_one():
    alphas = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    hidden = torch.eye(5, dtype=torch.float64)[None]
    fired = cif(hidden, alphas, threshold=0.75)
    assert fired.lengths.tolist() == [3]
    torch.testing.assert_close(fired.embeddings[0, 1], torch.tensor([0, 0.25, 0.5, 0, 0], dtype=torch.float64))


def test_training_scaling_fires_exactly_target_length_times():
    torch.manual_seed(0)
    predictor = CIFPredictor(dim=8, tail_threshold=0.45)
    hidden = torch.randn(2, 30, 8)
    lengths = torch.tensor([30, 21])
    targets = torch.tensor([7, 13])
    out = predictor(hidden, lengths, target_lengths=targets)
    assert out.lengths.tolist() == [7, 13]
    torch.testing.assert_close(out.alphas.sum(1), targets.float())
    assert out.alphas[1, 21:].abs().sum() == 0
    # Every fired embedding integrates exactly one unit of weight: with a constant hidden of ones, each is all ones.
    ones = cif(torch.ones(2, 30, 1), out.alphas, num_tokens=targets)
    for b, n in enumerate(targets.tolist()):
        torch.testing.assert_close(ones.embeddings[b, :n, 0], torch.ones(n), atol=1e-5, rtol=0)
    # The quantity is the unscaled sum, and the loss trains it towards N.
    quantity = predictor.weights(hidden, lengths).sum(1)
    torch.testing.assert_close(out.quantity, quantity)
    torch.testing.assert_close(quantity_loss(out.quantity, targets), (quantity - targets).abs().mean())


def test_inference_count_is_floor_of_weights_plus_tail():
    torch.manual_seed(1)
    predictor = CIFPredictor(dim=4, tail_threshold=0.45).eval()
    hidden = torch.randn(3, 25, 4)
    lengths = torch.tensor([25, 10, 1])
    out = predictor(hidden, lengths)
    expected = torch.floor(predictor.weights(hidden, lengths).sum(1) + 0.45).long()
    assert out.lengths.tolist() == expected.tolist()
    assert out.embeddings.shape == (3, int(expected.max()), 4)


def test_gradients_reach_alphas_and_hidden():
    hidden = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    raw = torch.rand(2, 9, dtype=torch.float64)
    alphas = (raw * 0.9 + 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h, a: cif(h, a).embeddings, (hidden, alphas))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_threshold(bad):
    with pytest.raises(ValueError, match="threshold"):
        cif(torch.zeros(1, 2, 1), torch.zeros(1, 2), threshold=bad)
