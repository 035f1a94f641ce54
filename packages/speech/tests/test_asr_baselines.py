"""The CTC and autoregressive baselines: CTC loss against a sum over every alignment, greedy CTC decoding by hand,
beam search against an exhaustive search, greedy == beam 1, batched == one by one, and both overfit a tiny batch."""

import itertools
import math

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.speech.asr.autoregressive import AttentionRecognizer
from paperzoo.speech.asr.ctc import CTCHead, CTCRecognizer, ctc_greedy_decode
from paperzoo.speech.asr.encoder import build_encoder
from paperzoo.speech.data.tokenizer import BLANK_ID, IGNORE_ID, SOS_EOS_ID


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: a second spinning OpenMP thread made these steps 20x slower."""
    with torch_threads(1):
        yield


def tiny_encoder(input_dim: int = 6, dim: int = 16):
    return build_encoder("sanm", input_dim, d_model=dim, num_heads=2, num_layers=1, ffn_dim=32, dropout=0.0)


def test_ctc_greedy_merges_repeats_then_drops_blanks_and_specials():
    frames = [3, 3, 0, 3, 4, 4, 1, 2, 5, 5]  # a a _ a b b <sos> <unk> c c
    scores = torch.nn.functional.one_hot(torch.tensor([frames, frames]), 6).float()
    assert ctc_greedy_decode(scores, torch.tensor([10, 5])) == [[3, 3, 4, 5], [3, 3, 4]]


def _collapse(path):
    merged = [token for i, token in enumerate(path) if i == 0 or token != path[i - 1]]
    return [token for token in merged if token != BLANK_ID]


def test_ctc_loss_is_minus_log_of_the_sum_over_alignments():
    torch.manual_seed(0)
    head = CTCHead(4, vocab_size=5)
    hidden = torch.randn(2, 4, 4)
    lengths, tokens, token_lengths = torch.tensor([4, 3]), torch.tensor([[3, 3], [4, IGNORE_ID]]), torch.tensor([2, 1])
    log_probs = head.log_probs(hidden)
    expected = 0.0
    for b in range(2):
        target = tokens[b, : token_lengths[b]].tolist()
        total = 0.0
        for path in itertools.product(range(5), repeat=int(lengths[b])):
            if _collapse(list(path)) == target:
                total += math.exp(sum(log_probs[b, t, k].item() for t, k in enumerate(path)))
        expected -= math.log(total)
    assert head.loss(hidden, lengths, tokens, token_lengths).item() == pytest.approx(expected / 2, rel=1e-5)


def _attention_model(seed: int = 0, **kwargs) -> AttentionRecognizer:
    torch.manual_seed(seed)
    options = {"num_heads": 2, "decoder_layers": 2, "ffn_dim": 32, "dropout": 0.0, "label_smoothing": 0.0} | kwargs
    return AttentionRecognizer(tiny_encoder(), vocab_size=5, **options).eval()


def test_beam_search_equals_exhaustive_search_on_a_tiny_vocabulary():
    """Vocabulary: blank, <sos/eos>, <unk>, a, b; at most 3 tokens, so 1 + 3 + 9 + 27 = 40 hypotheses: a beam of 40
    keeps them all and must return the most probable one."""
    model = _attention_model(max_length_ratio=0.5)
    with torch.no_grad():
        model.output.bias[SOS_EOS_ID] -= 2.0  # so that the best hypothesis is not the empty one
    features, lengths = torch.randn(1, 6, 6), torch.tensor([6])  # ceil(0.5 x 6) = 3 tokens at most
    all_hypotheses = [list(h) for n in range(4) for h in itertools.product((2, 3, 4), repeat=n)]
    scores = {tuple(h): model.score(features, lengths, h) for h in all_hypotheses}
    best = max(scores, key=scores.__getitem__)
    assert len(best) > 0
    memory, memory_lengths = model.encoder(features, lengths)
    hypotheses, beam_scores = model.beam_search(memory, memory_lengths, model.max_lengths(memory_lengths), 40)
    assert tuple(hypotheses[0]) == best
    assert beam_scores[0].item() == pytest.approx(scores[best], abs=1e-4)
    # a small beam returns a hypothesis scored as the model scores it, never above the exhaustive best
    hypotheses, beam_scores = model.beam_search(memory, memory_lengths, model.max_lengths(memory_lengths), 2)
    assert beam_scores[0].item() == pytest.approx(scores[tuple(hypotheses[0])], abs=1e-4)
    assert beam_scores[0].item() <= scores[best] + 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_beam_of_one_and_batched_equals_one_by_one(seed):
    model = _attention_model(seed, max_length_ratio=1.0)
    features, lengths = torch.randn(3, 7, 6), torch.tensor([7, 4, 2])
    greedy = model.decode(features, lengths)
    model.beam_size = 1
    memory, memory_lengths = model.encoder(features, lengths)
    beam_one, _ = model.beam_search(memory, memory_lengths, model.max_lengths(memory_lengths), 1)
    assert greedy == beam_one
    assert all(len(h) <= n for h, n in zip(greedy, lengths.tolist(), strict=True))
    model.beam_size = 3
    batched = model.decode(features, lengths)
    alone = [model.decode(features[i : i + 1, :n], lengths[i : i + 1])[0] for i, n in enumerate(lengths.tolist())]
    assert batched == alone


def test_attention_loss_is_the_token_average_and_ignores_padding():
    model = _attention_model(label_smoothing=0.0)
    features, lengths = torch.randn(2, 6, 6), torch.tensor([6, 4])
    tokens, token_lengths = torch.tensor([[3, 4, 3], [4, IGNORE_ID, IGNORE_ID]]), torch.tensor([3, 1])
    loss = model(features, lengths, tokens, token_lengths)["loss"]
    # each utterance alone (no padding), teacher-forced on <sos> y, scored on y <eos>, averaged over all 4 + 2 targets
    total, count = 0.0, 0
    for b, target in enumerate(([3, 4, 3], [4])):
        memory, memory_lengths = model.encoder(features[b : b + 1, : lengths[b]], lengths[b : b + 1])
        inputs = torch.tensor([[SOS_EOS_ID, *target]])
        logits = model.output(model.decoder(model.embed(inputs), memory, memory_lengths))[0]
        total -= logits.log_softmax(-1).gather(1, torch.tensor([*target, SOS_EOS_ID])[:, None]).sum().item()
        count += len(target) + 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("kind", ["ctc", "attention"])
def test_baselines_overfit_a_tiny_batch(kind):
    torch.manual_seed(0)
    features, lengths = torch.randn(2, 8, 6), torch.tensor([8, 6])
    tokens, token_lengths = torch.tensor([[3, 4, 3], [4, 4, IGNORE_ID]]), torch.tensor([3, 2])
    if kind == "ctc":
        model = CTCRecognizer(tiny_encoder(), vocab_size=5)
    else:
        model = AttentionRecognizer(tiny_encoder(), 5, num_heads=2, decoder_layers=1, ffn_dim=32, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        model(features, lengths, tokens, token_lengths)["loss"].backward()
        optimizer.step()
    model.eval()
    assert model.decode(features, lengths) == [[3, 4, 3], [4, 4]]
    if kind == "attention":
        model.beam_size = 4
        assert model.decode(features, lengths) == [[3, 4, 3], [4, 4]]


def test_hybrid_ctc_attention_loss():
    model = _attention_model(ctc_weight=0.3)
    features, lengths = torch.randn(2, 6, 6), torch.tensor([6, 4])
    tokens, token_lengths = torch.tensor([[3, 4], [4, IGNORE_ID]]), torch.tensor([2, 1])
    losses = model(features, lengths, tokens, token_lengths)
    assert losses["loss"].item() == pytest.approx(0.7 * losses["att"].item() + 0.3 * losses["ctc"].item(), rel=1e-5)
