"""The shared check machinery (`merging.checks.common`) on a stand-in testbed, and the vision claim checks."""

import math

import pytest
import torch

from paperzoo.efficiency.merging.checks import common


class StandIn:
    """A testbed stand-in: a 1-tensor "backbone" w; task t's accuracy on a split is a known function of w."""

    def __init__(self) -> None:
        self.base = {"backbone.w": torch.zeros(3)}
        self.experts = {
            "a": {"backbone.w": torch.tensor([1.0, 0.0, 0.0])},
            "b": {"backbone.w": torch.tensor([0.0, 1.0, 0.0])},
            "c": {"backbone.w": torch.tensor([0.0, 0.0, 1.0])},
        }
        self.calls = 0
        self.expert_accuracy = {t: self.accuracy(s, t, "test") for t, s in self.experts.items()}

    def accuracy(self, state: dict[str, torch.Tensor], task: str, split: str = "test") -> float:
        self.calls += 1
        w = state["backbone.w"]
        i = "abc".index(task)
        # peaks at w_i = 0.7 on val, 0.9 on test; experts (w_i = 1) get 0.91 on val, 0.99 on test
        peak = 0.7 if split == "val" else 0.9
        return 1.0 - float((w[i] - peak) ** 2) - 0.01 * float(w.sum() - w[i]) ** 2


def test_evaluate_normalizes_by_each_experts_accuracy_on_the_same_split() -> None:
    bed = StandIn()
    state = {"backbone.w": torch.tensor([0.5, 0.5, 0.0])}
    scores = common.evaluate(bed, state, ["a", "c"], "val")
    acc_a = 1.0 - 0.2**2 - 0.01 * 0.25
    assert scores.accuracy["a"] == pytest.approx(acc_a)
    assert scores.normalized["a"] == pytest.approx(acc_a / (1.0 - 0.3**2))
    assert scores.normalized["c"] == pytest.approx((1.0 - 0.49 - 0.01) / 0.91)
    assert scores.mean_normalized == pytest.approx((scores.normalized["a"] + scores.normalized["c"]) / 2)
    test = common.evaluate(bed, state, ["a"], "test")
    assert test.normalized["a"] == pytest.approx((1.0 - 0.16 - 0.0025) / 0.99)


def test_expert_val_accuracy_is_computed_once_per_testbed() -> None:
    bed = StandIn()
    state = {"backbone.w": torch.zeros(3)}
    common.evaluate(bed, state, ["a", "b"], "val")
    calls = bed.calls
    common.evaluate(bed, state, ["a", "b"], "val")
    assert bed.calls - calls == 2  # only the merged state's two evaluations


def test_tune_lambda_picks_the_val_optimum_and_reports_test() -> None:
    bed = StandIn()
    # task arithmetic of a and b: w = lambda * (1, 1, 0); val peaks at 0.7 (minus the 0.01 cross term)
    tuned = common.tuned_merge(bed, ["a", "b"], "task_arithmetic", grid=(0.3, 0.6, 0.7, 0.8, 1.0))

    def val_mean(lam: float) -> float:
        acc = 1.0 - (lam - 0.7) ** 2 - 0.01 * lam**2
        return acc / 0.91

    best = max((0.3, 0.6, 0.7, 0.8, 1.0), key=val_mean)
    assert tuned.lambda_ == best
    assert torch.allclose(tuned.state["backbone.w"], torch.tensor([best, best, 0.0]))
    assert tuned.val.mean_normalized == pytest.approx(val_mean(best))
    assert tuned.test.accuracy["a"] == pytest.approx(1.0 - (best - 0.9) ** 2 - 0.01 * best**2)
    assert [lam for lam, _ in tuned.val_curve] == [0.3, 0.6, 0.7, 0.8, 1.0]


def test_tuned_merge_without_lambda_scores_once() -> None:
    bed = StandIn()
    tuned = common.tuned_merge(bed, ["a", "b", "c"], "average")
    assert tuned.lambda_ is None
    assert torch.allclose(tuned.state["backbone.w"], torch.full((3,), 1 / 3))


def test_task_subsets_all_when_few_else_fixed_random() -> None:
    tasks = ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert common.task_subsets(tasks, 6, 3) == [tuple(tasks)]
    assert len(common.task_subsets(tasks, 5, 10)) == 6
    picked = common.task_subsets(tasks, 3, 4, seed=1)
    assert len(picked) == 4 == len(set(picked))
    assert all(len(s) == 3 and list(s) == sorted(s) for s in picked)
    assert picked == common.task_subsets(tasks, 3, 4, seed=1)
    assert math.comb(6, 2) == len(common.task_subsets(tasks, 2, 100))


def test_table_renders_rows_and_missing_cells() -> None:
    text = common.table({"ties": {"2": 0.91234, "6": 0.8}, "average": {"2": 0.5}}, ["2", "6"])
    lines = text.splitlines()
    assert len(lines) == 3
    assert "0.912" in lines[1] and "0.800" in lines[1]
    assert lines[2].split()[-1] == "-"
