"""The Paraformer claim check: every model shares one encoder architecture, the real-speech words are in the training
vocabulary, the card points at working objects, and (slow tier) the quick check runs end to end."""

from types import SimpleNamespace

import pytest
import torch

from paperzoo.core.card import load_object
from paperzoo.speech.paraformer import check
from paperzoo.speech.paraformer.card import CARD

VOCABULARY = ["<blank>", "<sos/eos>", "<unk>", "▁", *"abcdefghijklmnopqrstuvwxyz"]


def test_every_model_has_the_same_encoder():
    data = SimpleNamespace(vocabulary=VOCABULARY, num_features=560)
    tasks = {kind: check.build_task(check.QUICK, data, kind, 1e-3, 0) for kind in ("paraformer", "ar", "ctc")}
    shapes = {kind: [(n, p.shape) for n, p in task.model.encoder.named_parameters()] for kind, task in tasks.items()}
    assert shapes["paraformer"] == shapes["ar"] == shapes["ctc"]
    # seeded construction: the same encoder weights at the start
    for name, parameter in tasks["paraformer"].model.encoder.named_parameters():
        torch.testing.assert_close(parameter, dict(tasks["ar"].model.encoder.named_parameters())[name])


def test_real_words_are_in_the_corpus_vocabulary():
    words = check.real_word_list()
    assert {"car", "dog", "sky", "front", "center", "left"} <= set(words)
    assert len(words) == len(set(words))


def test_card():
    assert CARD.key == "paraformer" and CARD.number == 5 and CARD.kind == "train"
    assert "tiny" in CARD.configs() and "paraformer_espeak" in CARD.configs()
    assert load_object(CARD.check) is check.check
    assert load_object(CARD.task).__name__ == "ParaformerTask"
    for entry in CARD.entry_points:
        load_object(entry)


@pytest.mark.slow
def test_quick_check_runs():
    result = check.check(quick=True)
    assert result.key == "paraformer" and len(result.criteria) == 3
    expected = {"Paraformer without GLM", "AR greedy", "AR beam 5", "CTC greedy", "Paraformer + MWER fine-tuning"}
    assert expected <= set(result.baselines)
    assert all(figures["test batch1_rtf"] >= 0 for figures in result.baselines.values())
    assert "speedup over AR greedy (batch 1)" in result.method
