"""S4's card, configs and claim check: the tiny config trains, every config builds, the decision rule can
fail, and the quick check runs (slow tier)."""

import pytest

from paperzoo.core.testing import conformance
from paperzoo.efficiency.sequence.harness import RunFigures
from paperzoo.efficiency.sequence.s4 import check as s4_check
from paperzoo.efficiency.sequence.s4.card import CARD


def figures(accuracy: float) -> RunFigures:
    return RunFigures(accuracy, 1.0, 1.0, 1.0, 100, 10, 1.0, {})


class FakeData:
    seq_len, vocab_size, num_classes = 32, 16, 10


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace training by fixed accuracies per mixer: the rule alone decides the verdict."""
    accuracy: dict[str, float] = {}
    monkeypatch.setattr(s4_check, "lra_datamodules", lambda setting: {"listops": FakeData(), "pathfinder": FakeData()})
    monkeypatch.setattr(s4_check, "majority_accuracy", lambda data: 0.2)
    monkeypatch.setattr(s4_check, "train_variant", lambda setting, data, steps, mixer, args: figures(accuracy[mixer]))
    return accuracy


def test_rule_passes_when_s4_is_ahead_and_fails_on_a_tie(fake_runs):
    fake_runs.update(s4=0.60, attention=0.40)
    result = s4_check._check(s4_check.QUICK)
    assert result.passed and len(result.criteria) == 2
    assert result.method["listops test acc"] == 0.60 and result.baselines["transformer"]["pathfinder test acc"] == 0.40
    fake_runs.update(s4=0.405)  # within the one-point margin: not a win
    assert not s4_check._check(s4_check.QUICK).passed


# The real configs are checked at their own lengths and settings, with a small width so the models build in a second.
SMALL = ("--model.init_args.dim=8", "--model.init_args.depth=1")


def test_card_and_configs():
    CARD.import_modules()
    assert CARD.key == "s4" and CARD.number == 44
    assert {"tiny", "listops", "pathfinder"} <= set(CARD.configs())
    for name in ("listops", "pathfinder"):
        task, data = conformance.build_from_config(CARD.config(name), *SMALL)
        assert task.hparams.mixer == "s4" and task.hparams.mixer_args["bidirectional"]
        assert data.seq_len <= task.model.blocks[0].mixer.l_max


@pytest.mark.slow
def test_quick_check_runs():
    result = s4_check.check(quick=True)
    assert result.key == "s4" and {c.name for c in result.criteria} == {
        "listops: S4 - transformer test accuracy",
        "pathfinder: S4 - transformer test accuracy",
    }
    assert 0.0 <= result.method["listops test acc"] <= 1.0
