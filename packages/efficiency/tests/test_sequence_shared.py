"""The shared sequence pieces: the mixer registry, attention as a TokenMixer, the backbone and its tasks."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence import build_mixer, mixer_names
from paperzoo.efficiency.sequence.attention import AttentionMixer
from paperzoo.efficiency.sequence.backbone import SequenceModel
from paperzoo.efficiency.sequence.task import SequenceClassificationTask, SequenceTokenTask, pool
from paperzoo.efficiency.sequence.testing import assert_mixer_contract


def test_unknown_mixer_lists_the_known_ones():
    with pytest.raises(ConfigError, match="attention"):
        build_mixer("atention", 8)
    assert "attention" in mixer_names()


@pytest.mark.parametrize("causal", [True, False])
def test_attention_mixer_contract(causal):
    torch.manual_seed(0)
    assert_mixer_contract(AttentionMixer(16, n_heads=4, causal=causal), 16)


def test_attention_materialized_matrix_is_a_causal_softmax():
    torch.manual_seed(0)
    mixer = AttentionMixer(8, n_heads=2, causal=True)
    weights = mixer.mixing_matrix(torch.randn(1, 5, 8))  # [1, 8, 5, 5]
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 8, 5))
    assert (weights.triu(1) == 0).all()
    assert torch.equal(weights[:, 0], weights[:, 3])  # channels 0..3 share head 0


def test_bidirectional_attention_sees_the_future():
    torch.manual_seed(0)
    mixer = AttentionMixer(8, n_heads=2, causal=False).eval()
    x = torch.randn(1, 6, 8)
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(mixer(x)[:, 0], mixer(changed)[:, 0])


def test_model_step_matches_forward():
    torch.manual_seed(0)
    model = SequenceModel(11, dim=16, depth=2, mixer="attention", mixer_args={"n_heads": 2}).eval()
    tokens = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        full = model(tokens)
        state, steps = model.initial_state(2), []
        for t in range(9):
            y, state = model.step(tokens[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_pooling_by_hand():
    features = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert pool(features, mask, "mean").item() == 2.0
    assert pool(features, mask, "last").item() == 3.0
    assert pool(features, mask, "first").item() == 1.0


def test_classification_task_pairs_and_loss_drops():
    torch.manual_seed(0)
    task = SequenceClassificationTask(vocab_size=10, num_classes=3, dim=16, depth=1, paired=True)
    batch = {
        "tokens": torch.randint(1, 10, (4, 2, 12)),
        "mask": torch.ones(4, 2, 12, dtype=torch.bool),
        "label": torch.tensor([0, 1, 2, 1]),
    }
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(task(batch["tokens"], batch["mask"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(Exception, match="paired"):
        SequenceClassificationTask(vocab_size=10, num_classes=3, dim=16, depth=1)(batch["tokens"])


def test_token_task_ignores_unscored_positions():
    torch.manual_seed(0)
    task = SequenceTokenTask(vocab_size=6, num_classes=6, dim=8, depth=1)
    tokens = torch.randint(0, 6, (2, 5))
    targets = torch.full((2, 5), -100)
    targets[:, -1] = 3
    logits = task(tokens)
    expected = torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1])
    task.log = lambda *a, **k: None
    torch.testing.assert_close(task.step({"tokens": tokens, "targets": targets}, "train"), expected)


def test_harness_trains_measures_and_learns(tmp_path, monkeypatch):
    from paperzoo.efficiency.sequence.harness import step_peak_memory_mb, train_and_evaluate
    from paperzoo.efficiency.sequence.lra.base import SequenceDataModule

    class FirstTokenParity(SequenceDataModule):
        def __init__(self):
            super().__init__(batch_size=16)
            self.save_hyperparameters()
            self.vocab_size, self.num_classes, self.seq_len = 8, 2, 10

        def build(self):
            tokens = torch.randint(1, 8, (256, 10), generator=torch.Generator().manual_seed(0))
            split = {"tokens": tokens, "label": tokens[:, 0] % 2}
            return {"train": split, "val": split, "test": split}

    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    torch.manual_seed(0)
    task = SequenceClassificationTask(vocab_size=8, num_classes=2, dim=16, depth=1, pooling="first")
    figures = train_and_evaluate(task, FirstTokenParity(), max_steps=40)
    assert figures.steps == 40 and figures.accuracy > 0.9 and figures.steps_per_s > 0
    # a batch 4x larger needs more memory for its activations
    small = {"tokens": torch.randint(1, 8, (4, 64)), "label": torch.zeros(4, dtype=torch.long)}
    large = {"tokens": torch.randint(1, 8, (16, 64)), "label": torch.zeros(16, dtype=torch.long)}
    assert step_peak_memory_mb(task, large) > 2 * step_peak_memory_mb(task, small) > 0
