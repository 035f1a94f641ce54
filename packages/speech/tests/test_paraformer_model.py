"""Paraformer end to end on tiny synthetic features: the losses and their parts, the GLM second pass and its loss
positions, MWER's gradient path, <eos> handling, decoding, and learning a toy alignment."""

import pytest
import torch

from paperzoo.core.checks import torch_threads
from paperzoo.speech.data.tokenizer import IGNORE_ID, SOS_EOS_ID
from paperzoo.speech.paraformer.model import Paraformer, append_eos

VOCAB, FEATURES = 12, 16


def tiny(**overrides) -> Paraformer:
    args = dict(
        vocab_size=VOCAB,
        input_dim=FEATURES,
        d_model=32,
        num_heads=2,
        encoder_layers=1,
        decoder_layers=1,
        ffn_dim=64,
        dropout=0.0,
        encoder_kernel_size=5,
    )
    return Paraformer(**(args | overrides))


def toy_batch(size: int, generator: torch.Generator):
    """Token k is a 4-frame burst on feature k, one frame of silence between tokens."""
    features = torch.zeros(size, 40, FEATURES)
    tokens = torch.full((size, 6), IGNORE_ID)
    feature_lengths = torch.zeros(size, dtype=torch.long)
    token_lengths = torch.zeros(size, dtype=torch.long)
    for i in range(size):
        n = int(torch.randint(2, 7, (1,), generator=generator))
        ids = torch.randint(3, VOCAB, (n,), generator=generator)
        for j, k in enumerate(ids.tolist()):
            features[i, 5 * j : 5 * j + 4, k] = 1.0
        feature_lengths[i], tokens[i, :n], token_lengths[i] = 5 * n + 2, ids, n
    return features + 0.05 * torch.randn(features.shape, generator=generator), feature_lengths, tokens, token_lengths


def test_append_eos():
    tokens, lengths = append_eos(torch.tensor([[5, 6, 7], [8, IGNORE_ID, IGNORE_ID]]), torch.tensor([3, 1]))
    assert tokens.tolist() == [[5, 6, 7, SOS_EOS_ID], [8, SOS_EOS_ID, IGNORE_ID, IGNORE_ID]]
    assert lengths.tolist() == [4, 2]


def test_losses_finite_and_backward():
    torch.manual_seed(0)
    model = tiny(mwer_weight=0.5, ctc_weight=0.3)
    batch = toy_batch(3, torch.Generator().manual_seed(0))
    losses = model(*batch)
    assert set(losses) == {"loss", "ce", "quantity", "glm_replaced", "mwer", "ctc"}
    expected = 0.7 * losses["ce"] + losses["quantity"] + 0.3 * losses["ctc"] + 0.5 * losses["mwer"]
    torch.testing.assert_close(losses["loss"], expected)
    assert all(torch.isfinite(value) for value in losses.values())
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_glm_replaces_ceil_lambda_d_and_trains_on_the_rest(monkeypatch):
    torch.manual_seed(0)
    model = tiny(sampling_ratio=0.5)
    batch = toy_batch(4, torch.Generator().manual_seed(1))
    seen = {}
    import paperzoo.speech.paraformer.model as module

    real_mask = module.glancing_mask

    def spy(predictions, targets, lengths, ratio):
        mask = real_mask(predictions, targets, lengths, ratio)
        seen["distance"] = ((predictions != targets) & (targets != IGNORE_ID)).sum(1)
        seen["mask"] = mask
        return mask

    monkeypatch.setattr(module, "glancing_mask", spy)
    losses = model(*batch)
    # an untrained decoder gets (almost) every token wrong: ceil(0.5 d) replaced in each utterance
    expected = torch.ceil(seen["distance"] * 0.5).long()
    assert seen["mask"].sum(1).tolist() == expected.tolist()
    valid_tokens = (batch[3] + 1).sum()
    torch.testing.assert_close(losses["glm_replaced"], expected.sum() / valid_tokens)


def test_glm_loss_positions_paper_vs_all():
    batch = toy_batch(4, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    rest = tiny(sampling_ratio=1.0)
    torch.manual_seed(0)
    everything = tiny(sampling_ratio=1.0, glm_loss_on_all=True)
    torch.manual_seed(5)
    rest_losses = rest(*batch)
    torch.manual_seed(5)
    all_losses = everything(*batch)
    # lambda = 1 replaces every wrong token; an untrained first pass is wrong almost everywhere, so the paper's loss
    # covers only the few right ones and differs from the all-positions loss.
    assert not torch.allclose(rest_losses["ce"], all_losses["ce"])


def test_without_glm_and_in_eval_there_is_one_pass():
    torch.manual_seed(0)
    model = tiny(sampling_ratio=0.0)
    batch = toy_batch(2, torch.Generator().manual_seed(3))
    calls = []
    model.decoder.register_forward_hook(lambda *args: calls.append(1))
    assert "glm_replaced" not in model(*batch)
    model.eval()
    model(*batch)
    assert len(calls) == 2


def test_decode_returns_no_special_ids():
    torch.manual_seed(0)
    model = tiny().eval()
    features, lengths, _, _ = toy_batch(3, torch.Generator().manual_seed(4))
    hypotheses = model.decode(features, lengths)
    assert len(hypotheses) == 3
    assert all(token >= 3 for row in hypotheses for token in row)


@pytest.mark.parametrize(
    "bad", [dict(sampling_ratio=1.5), dict(vocab_size=3), dict(mwer_candidates=1), dict(ctc_weight=1.0)]
)
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        tiny(**bad)


def test_learns_a_toy_alignment():
    with torch_threads(1):
        _learn_toy_alignment()


def _learn_toy_alignment():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        losses = model(*toy_batch(16, generator))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    model.eval()
    features, lengths, tokens, token_lengths = toy_batch(16, generator)
    hypotheses = model.decode(features, lengths)
    references = [row[:n].tolist() for row, n in zip(tokens, token_lengths, strict=True)]
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True))
    assert exact >= 12, (hypotheses, references)
