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


def test_method_builder_rescales_the_lambda_one_merge_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    bed = StandIn()
    bed.base = {"backbone.w": torch.randn(3, generator=g)}
    bed.experts = {t: {"backbone.w": bed.base["backbone.w"] + torch.randn(3, generator=g)} for t in "abc"}
    for method, params in (("task_arithmetic", {}), ("ties", {"density": 0.5})):
        build = common.method_builder(bed, method, **params)
        for lam in (0.3, 1.0, 1.7):
            direct = common.merge_tasks(bed, ["a", "c"], method, lambda_=lam, **params)
            torch.testing.assert_close(build(["a", "c"], lam)["backbone.w"], direct["backbone.w"])
    average = common.method_builder(bed, "average")(["a", "b"], None)["backbone.w"]
    torch.testing.assert_close(average, (bed.experts["a"]["backbone.w"] + bed.experts["b"]["backbone.w"]) / 2)


def test_shared_lambda_maximizes_the_mean_over_subsets() -> None:
    bed = StandIn()
    subsets = [("a", "b"), ("a", "b", "c")]
    build = common.method_builder(bed, "task_arithmetic")
    grid = (0.2, 0.5, 0.7, 0.9)
    tuned = common.tune_shared_lambda(bed, subsets, build, grid)
    means = {
        lam: sum(common.evaluate(bed, build(s, lam), s, "val").mean_normalized for s in subsets) / 2 for lam in grid
    }
    assert all(t.lambda_ == max(means, key=lambda k: means[k]) for t in tuned)
    assert [lam for lam, _ in tuned[0].val_curve] == list(grid)
    swept = common.sweep(bed, {2: subsets[:1], 3: subsets[1:]}, {"ta": (build, grid), "avg": (build, None)})
    assert swept["avg"][2][0].lambda_ is None
    summary = common.summarize(swept["ta"])
    assert summary["normalized_k3"] == pytest.approx(swept["ta"][3][0].test.mean_normalized)
    assert summary["normalized_std_k2"] == 0.0 and "lambda_k2" in summary


def test_ties_trim_matches_a_naive_global_top_k_and_trim_only_merges_without_election() -> None:
    from paperzoo.efficiency.merging.checks.ties import trim_only_merge, trimmed_task_vector

    g = torch.Generator().manual_seed(3)
    base = {"a": torch.randn(4, 5, generator=g), "b": torch.randn(7, generator=g)}
    model = {n: t + torch.randn(t.shape, generator=g) for n, t in base.items()}
    trimmed = trimmed_task_vector(base, model, density=0.25)
    flat = torch.cat([(model[n] - base[n]).reshape(-1) for n in base])
    k = round(0.25 * flat.numel())
    kth = flat.abs().sort(descending=True).values[k - 1]
    kept = torch.cat([trimmed[n].reshape(-1) for n in base])
    assert int((kept != 0).sum()) == k
    torch.testing.assert_close(kept, torch.where(flat.abs() >= kth, flat, torch.zeros_like(flat)))
    # hand case: entries (+2, -1) -> no election: mean 0.5; (3, 0) -> 3; (0, 0) -> 0
    zero = {"w": torch.zeros(3)}
    t1, t2 = {"w": torch.tensor([2.0, 3.0, 0.0])}, {"w": torch.tensor([-1.0, 0.0, 0.0])}
    torch.testing.assert_close(trim_only_merge(zero, [t1, t2], 2.0)["w"], torch.tensor([1.0, 6.0, 0.0]))
    torch.testing.assert_close(trim_only_merge(zero, [t1, t2], 1.0, "sum")["w"], torch.tensor([1.0, 3.0, 0.0]))


@pytest.fixture
def tiny_cache(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERZOO_CACHE", str(tmp_path))


TINY = common.Setting(vision="tiny", text="tiny", subsets=1, limit=(("val", 50), ("test", 60)))


@pytest.mark.slow  # ~90 s: a fresh cache rebuilds the data and the tiny testbeds
def test_check_machinery_on_the_tiny_testbed(tiny_cache: None) -> None:
    from paperzoo.efficiency.merging.checks import fisher, pcb, ties

    for module in (ties, fisher, pcb):
        result = module.run(TINY)
        assert result.key == module.CARD.key and result.criteria and result.curves
        assert all(math.isfinite(c.measured) for c in result.criteria)
        assert set(result.curves) >= {"average", "task_arithmetic"}
        assert all(x == 2.0 for x, _ in next(iter(result.curves.values()))[:1])
    testbed = TINY.vision_testbed()
    assert isinstance(testbed, common.Subsampled)
    task = testbed.tasks[0]
    x, y = testbed.data(task, "val")
    assert testbed.accuracy(testbed.experts[task], task, "val") * 50 == pytest.approx(
        round(testbed.accuracy(testbed.experts[task], task, "val") * 50)
    )
    assert 0.0 <= testbed.expert_accuracy[task] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("key", ["ties", "fisher", "pcb"])
def test_quick_claim_check_runs(key: str) -> None:
    import importlib

    module = importlib.import_module(f"paperzoo.efficiency.merging.checks.{key}")
    result = module.check(quick=True)
    assert result.key == key and len(result.criteria) >= 2
    assert all(math.isfinite(c.measured) for c in result.criteria)
