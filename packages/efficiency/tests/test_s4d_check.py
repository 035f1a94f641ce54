"""S4D's card, configs and claim check: the tiny config trains, every config builds, the decision rule can
fail, and the quick check runs (slow tier)."""

import pytest

from paperzoo.core.testing import conformance
from paperzoo.efficiency.sequence.harness import RunFigures
from paperzoo.efficiency.sequence.s4d import check as s4d_check
from paperzoo.efficiency.sequence.s4d.card import CARD


class FakeData:
    seq_len, vocab_size, num_classes = 32, 16, 10


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace training by fixed accuracies per variant (S4, or S4D by init): the rule alone decides."""
    accuracy: dict[str, float] = {}

    def run(setting, data, steps, mixer, args):
        return RunFigures(accuracy[args.get("init", mixer)], 1.0, 1.0, 1.0, 100, 10, 1.0, {})

    monkeypatch.setattr(s4d_check, "lra_datamodules", lambda setting: {"listops": FakeData(), "pathfinder": FakeData()})
    monkeypatch.setattr(s4d_check, "majority_accuracy", lambda data: 0.2)
    monkeypatch.setattr(s4d_check, "train_variant", run)
    return accuracy


def test_rule(fake_runs):
    fake_runs.update(s4=0.60, lin=0.59, inv=0.58, legs=0.61, random=0.40)
    result = s4d_check._check(s4d_check.QUICK)
    assert result.passed and len(result.criteria) == 8  # 3 near-S4 + 1 init criterion, per task
    assert result.method["S4D-LegS listops test acc"] == 0.61
    assert result.baselines["S4D-Random"]["pathfinder test acc"] == 0.40
    assert result.baselines["S4D structured mean"]["listops test acc"] == pytest.approx((0.59 + 0.58 + 0.61) / 3)
    fake_runs.update(inv=0.55)  # four points below S4
    assert not s4d_check._check(s4d_check.QUICK).passed
    fake_runs.update(inv=0.58, random=0.59)  # random as good as the structured mean
    assert not s4d_check._check(s4d_check.QUICK).passed


# The real configs are checked at their own lengths and settings, with a small width so the models build in a second.
SMALL = ("--model.init_args.dim=8", "--model.init_args.depth=1")


def test_card_and_configs():
    CARD.import_modules()
    assert CARD.key == "s4d" and CARD.number == 66
    assert {"tiny", "listops", "pathfinder"} <= set(CARD.configs())
    for name in ("listops", "pathfinder"):
        task, _ = conformance.build_from_config(CARD.config(name), *SMALL)
        assert task.hparams.mixer == "s4d" and task.hparams.mixer_args["init"] == "legs"


@pytest.mark.slow
def test_quick_check_runs():
    result = s4d_check.check(quick=True)
    assert result.key == "s4d" and len(result.criteria) == 8
    assert set(result.baselines) == {"S4", "S4D-Random", "S4D structured mean"}
