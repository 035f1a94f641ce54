"""The Mamba paper's diagnostics: selective copying and induction heads, checked sample by sample."""

import pytest
import torch

from paperzoo.core.errors import ConfigError
from paperzoo.efficiency.sequence.lra.diagnostics import (
    NOISE,
    InductionHeadsDataModule,
    SelectiveCopyingDataModule,
    induction_heads,
    selective_copying,
)
from paperzoo.efficiency.sequence.task import IGNORE_INDEX


def test_selective_copying_targets_are_the_data_tokens_in_order():
    split = selective_copying(64, num_noise=10, num_tokens=4, alphabet=8, generator=torch.Generator().manual_seed(0))
    tokens, targets = split["tokens"], split["targets"]
    assert tokens.shape == targets.shape == (64, 10 + 2 * 4)
    positions = set()
    for row, target in zip(tokens.tolist(), targets.tolist(), strict=True):
        context, markers = row[:14], row[14:]
        data = [t for t in context if t != NOISE]
        assert len(data) == 4 and all(2 <= t <= 7 for t in data)  # 6 data symbols, ids 2..7
        assert markers == [8] * 4  # the marker is id `alphabet`
        assert target[:14] == [IGNORE_INDEX] * 14
        assert target[14:] == [t - 2 for t in data]  # class id = symbol id - 2, in order of appearance
        positions.add(tuple(i for i, t in enumerate(context) if t != NOISE))
    assert len(positions) > 50  # positions are random per sample (not the fixed-prefix copying task)
    assert 0 not in tokens  # 0 is padding


def test_induction_heads_target_is_the_token_after_the_first_trigger():
    split = induction_heads(128, seq_len=20, vocab=6, generator=torch.Generator().manual_seed(0))
    tokens, targets = split["tokens"], split["targets"]
    firsts = set()
    for row, target in zip(tokens.tolist(), targets.tolist(), strict=True):
        triggers = [i for i, t in enumerate(row) if t == 6]
        assert len(triggers) == 2 and triggers[1] == 19 and triggers[0] <= 17
        assert all(1 <= t <= 5 for i, t in enumerate(row) if i not in triggers)
        assert target[:-1] == [IGNORE_INDEX] * 19
        assert target[-1] == row[triggers[0] + 1] - 1
        firsts.add(triggers[0])
    assert len(firsts) > 10


def test_datamodules_build_cached_splits_with_the_declared_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))
    copying = SelectiveCopyingDataModule(num_noise=6, num_tokens=3, alphabet=5, num_train=16, num_val=4, num_test=8)
    assert (copying.vocab_size, copying.num_classes, copying.seq_len) == (6, 3, 12)
    copying.setup()
    item = copying.train_set[0]
    assert item["tokens"].shape == (12,) and item["mask"].all() and (item["targets"] != IGNORE_INDEX).sum() == 3
    assert int(copying.test_set.fields["tokens"].max()) <= copying.vocab_size - 1
    induction = InductionHeadsDataModule(seq_len=10, vocab=5, test_seq_len=40, num_train=16, num_val=4, num_test=8)
    assert (induction.vocab_size, induction.num_classes, induction.seq_len) == (6, 4, 10)
    induction.setup()
    assert induction.train_set.fields["tokens"].shape == (16, 10)
    assert induction.val_set.fields["tokens"].shape == (4, 10)
    assert induction.test_set.fields["tokens"].shape == (8, 40)  # extrapolation length
    again = InductionHeadsDataModule(seq_len=10, vocab=5, test_seq_len=40, num_train=16, num_val=4, num_test=8)
    again.setup()
    assert torch.equal(again.test_set.fields["tokens"], induction.test_set.fields["tokens"])
    assert not torch.equal(induction.train_set.fields["tokens"][:4], induction.val_set.fields["tokens"])


def test_bad_arguments_name_the_value():
    with pytest.raises(ConfigError, match="alphabet"):
        SelectiveCopyingDataModule(alphabet=3)
    with pytest.raises(ConfigError, match="num_tokens"):
        SelectiveCopyingDataModule(num_tokens=0)
    with pytest.raises(ConfigError, match="seq_len"):
        InductionHeadsDataModule(seq_len=2)
