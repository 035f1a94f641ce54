"""MWER on a tiny enumerable case (every hypothesis listed, the loss computed by hand), the candidate sampler, and
the edit distance."""

import itertools

import torch

from paperzoo.speech.paraformer.mwer import edit_distance, mwer_loss, sample_candidates


def test_edit_distance():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 3], [1, 2, 3]) == 1
    assert edit_distance([1, 2, 3, 4], [1, 2, 3]) == 1
    assert edit_distance([4, 2, 5], [1, 2, 3]) == 2
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([2, 1], [1, 2]) == 2


def test_enumerable_case_by_hand():
    # Two positions, vocabulary {0, 1}, reference [0, 1]. P(pos 0 = 0) = 0.7, P(pos 1 = 1) = 0.4.
    probs = torch.tensor([[[0.7, 0.3], [0.6, 0.4]]], dtype=torch.float64)
    candidates = torch.tensor([[list(c) for c in itertools.product([0, 1], repeat=2)]])  # 00 01 10 11
    # errors: 00 -> 1, 01 -> 0, 10 -> 2, 11 -> 1 (mean 1); probabilities 0.42, 0.28, 0.18, 0.12 (sum 1)
    # loss = 0.42 * 0 + 0.28 * (-1) + 0.18 * 1 + 0.12 * 0 = -0.10 (= expected errors 0.3 + 0.6 - mean 1)
    loss = mwer_loss(probs.log(), candidates, torch.tensor([[0, 1]]), torch.tensor([2]))
    torch.testing.assert_close(loss, torch.tensor(-0.10, dtype=torch.float64))


def test_renormalised_over_a_partial_list():
    # Only 00 and 10 listed: P^ = 0.42 / 0.60 and 0.18 / 0.60; errors 1, 2, mean 1.5 -> 0.7 * -0.5 + 0.3 * 0.5 = -0.2.
    probs = torch.tensor([[[0.7, 0.3], [0.6, 0.4]]], dtype=torch.float64)
    loss = mwer_loss(probs.log(), torch.tensor([[[0, 0], [1, 0]]]), torch.tensor([[0, 1]]), torch.tensor([2]))
    torch.testing.assert_close(loss, torch.tensor(-0.2, dtype=torch.float64))


def test_duplicates_and_padding_do_not_count():
    probs = torch.tensor([[[0.7, 0.3], [0.6, 0.4], [0.5, 0.5]]], dtype=torch.float64)
    candidates = torch.tensor([[[0, 0, 1], [1, 0, 0], [0, 0, 0]]])  # the third equals the first within length 2
    distinct = torch.tensor([[True, True, False]])
    loss = mwer_loss(probs.log(), candidates, torch.tensor([[0, 1, 1]]), torch.tensor([2]), distinct)
    torch.testing.assert_close(loss, torch.tensor(-0.2, dtype=torch.float64))


def test_a_gradient_step_lowers_the_expected_errors():
    logits = torch.zeros(1, 2, 2, dtype=torch.float64, requires_grad=True)
    candidates = torch.tensor([[list(c) for c in itertools.product([0, 1], repeat=2)]])
    reference = torch.tensor([[0, 1]])
    loss = mwer_loss(logits.log_softmax(-1), candidates, reference, torch.tensor([2]))
    loss.backward()
    with torch.no_grad():
        probs = (logits - logits.grad).softmax(-1)
    assert probs[0, 0, 0] > 0.5 and probs[0, 1, 1] > 0.5


def test_candidates_greedy_first_then_samples_of_the_distribution():
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [1 / 3, 1 / 3, 1 / 3]]])
    candidates, distinct = sample_candidates(probs.log(), torch.tensor([2]), 3001, generator)
    assert candidates.shape == (1, 3001, 3)
    assert candidates[0, 0].tolist() == [0, 2, 0]  # greedy; padding position 2 zeroed
    assert (candidates[0, :, 2] == 0).all()
    sampled = candidates[0, 1:]
    for position in range(2):
        frequency = torch.bincount(sampled[:, position], minlength=3).float() / 3000
        torch.testing.assert_close(frequency, probs[0, position], atol=0.03, rtol=0)
    # 9 distinct pairs over the first two positions at most, and each is marked distinct once.
    assert int(distinct.sum()) == len({tuple(c) for c in candidates[0, :, :2].tolist()}) <= 9
    assert distinct[0, 0]
