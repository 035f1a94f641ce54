"""Shared machinery of the merging claim checks on the testbed (`paperzoo.efficiency.merging.testbed`).

- `evaluate`: a merged backbone (vision) or model (text) scored on each task -> absolute accuracy and accuracy
  normalized by that task's expert (the TIES/PCB papers' "normalized accuracy": merged / individual fine-tuned).
  On the vision track the backbone is evaluated with each task's own fine-tuned head.
- `tune_lambda` / `tuned_merge`: the scaling coefficient lambda_ of a merge chosen on the **val** split over a small
  shared grid (`LAMBDA_GRID`) by the mean normalized val accuracy (ties go to the smaller lambda), then scored on
  test. Methods without lambda_ (plain averaging) are scored once.
- `tune_shared_lambda` / `sweep`: one lambda_ per method and subset size, chosen on val by the mean over that
  size's subsets; `sweep` runs several methods (`Builder`s, e.g. `method_builder`) over subsets of several sizes.
- `task_subsets`: fixed, seeded subsets of the tasks of a given size (all of them when there are few).
- `Subsampled`: a view of a vision testbed that scores on a fixed seeded random subset of each split (at most
  `limit[split]` examples; the experts' normalizers on the same subset), to make a lambda search affordable.
- `Setting`: one budget of a vision check (testbed preset, subset sizes and counts, subsampled splits);
  `summarize`: per-size mean and spread of a `sweep`'s normalized test accuracy.
- `table`: a plain-text table of figures.

Both testbed tracks fit the `Testbed` protocol (`experts`, `base`, `expert_accuracy`, `accuracy(state, task,
split)`), so the text track's corpora are "tasks" here too (next-byte top-1 accuracy).
"""

import itertools
import math
import random
import statistics
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from paperzoo.core.errors import require
from paperzoo.efficiency.merging.procedure import merge, method_parameters
from paperzoo.efficiency.merging.task_vector import StateDict

__all__ = [
    "LAMBDA_GRID",
    "Builder",
    "Scores",
    "Setting",
    "Subsampled",
    "Testbed",
    "Tuned",
    "evaluate",
    "expert_accuracy",
    "has_lambda",
    "merge_tasks",
    "method_builder",
    "table",
    "task_subsets",
    "summarize",
    "sweep",
    "tune_lambda",
    "tune_shared_lambda",
    "tuned_merge",
]

# Task arithmetic over K summed task vectors peaks near lambda ~ 1/K..1; TIES/PCB (means, not sums) near 1-2.
LAMBDA_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0)


class Testbed(Protocol):
    """What the checks need of a testbed (VisionTestbed and TextTestbed both fit)."""

    base: StateDict
    experts: Mapping[str, StateDict]
    expert_accuracy: Mapping[str, float]

    def accuracy(self, state: StateDict, task: str, split: str = "test") -> float: ...


@dataclass(frozen=True)
class Scores:
    """Per-task accuracy of one model, absolute and normalized by each task's expert on the same split."""

    accuracy: dict[str, float]
    normalized: dict[str, float]

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    @property
    def mean_normalized(self) -> float:
        return sum(self.normalized.values()) / len(self.normalized)


class Subsampled:
    """A vision testbed scored on at most `limit[split]` examples of each split: a fixed random subset per (task,
    split), drawn with `seed` (splits can be sorted by class, so not the first N). Splits not in `limit` are whole.
    `expert_accuracy` (test) is recomputed on the subset when test is limited. Everything else is the testbed's.
    """

    def __init__(self, testbed: Any, limit: Mapping[str, int], seed: int = 0):
        require(all(n > 0 for n in limit.values()), f"limit={dict(limit)} must be positive per split.")
        self.testbed, self.limit, self.seed = testbed, dict(limit), seed
        self.base, self.experts = testbed.base, testbed.experts
        self._index: dict[tuple[str, str], torch.Tensor] = {}
        self._expert_accuracy: dict[str, float] | None = None

    def __getattr__(self, name: str) -> Any:  # heads, tasks, recipe, network, data, ...
        return getattr(self.__dict__["testbed"], name)

    @property
    def expert_accuracy(self) -> dict[str, float]:
        if "test" not in self.limit:
            return dict(self.testbed.expert_accuracy)
        if self._expert_accuracy is None:
            self._expert_accuracy = {t: self.accuracy(self.experts[t], t, "test") for t in self.testbed.tasks}
        return self._expert_accuracy

    def accuracy(self, state: StateDict, task: str, split: str = "test") -> float:
        if split not in self.limit:
            return float(self.testbed.accuracy(state, task, split))
        x, y = self.testbed.data(task, split)
        if (task, split) not in self._index:
            generator = torch.Generator().manual_seed(self.seed)
            self._index[task, split] = torch.randperm(len(x), generator=generator)[: self.limit[split]]
        index = self._index[task, split]
        with torch.no_grad():
            predicted = self.testbed.network(state, task)(x[index]).argmax(-1)  # [n]
        return float((predicted == y[index]).float().mean())


# testbed -> {(task, split): expert accuracy}; weak so a dropped testbed frees its entry.
_EXPERT_CACHE: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str], float]]" = weakref.WeakKeyDictionary()


def expert_accuracy(testbed: Testbed, task: str, split: str = "test") -> float:
    """The accuracy of `task`'s own expert on `split` (the normalizer); computed once per testbed and split."""
    if split == "test" and task in testbed.expert_accuracy:
        return float(testbed.expert_accuracy[task])
    try:
        cache = _EXPERT_CACHE.setdefault(testbed, {})
    except TypeError:  # not weak-referenceable: compute every time
        cache = {}
    if (task, split) not in cache:
        cache[(task, split)] = float(testbed.accuracy(testbed.experts[task], task, split))
    return cache[(task, split)]


def evaluate(testbed: Testbed, state: StateDict, tasks: Sequence[str], split: str = "test") -> Scores:
    """Accuracy of `state` on each of `tasks` (with each task's head on the vision track), absolute and normalized."""
    require(len(tasks) > 0, "No tasks to evaluate on; expected at least one.")
    accuracy = {task: float(testbed.accuracy(state, task, split)) for task in tasks}
    normalized = {task: accuracy[task] / max(expert_accuracy(testbed, task, split), 1e-12) for task in tasks}
    return Scores(accuracy, normalized)


def merge_tasks(testbed: Testbed, tasks: Sequence[str], method: str, **params: Any) -> StateDict:
    """`merge(testbed.base, [expert of each task], method, **params)`."""
    return merge(testbed.base, [testbed.experts[task] for task in tasks], method, **params)


@dataclass(frozen=True)
class Tuned:
    """A merge with lambda_ chosen on val: the lambda (None without one), its val and test scores, the state."""

    lambda_: float | None
    val: Scores
    test: Scores
    state: StateDict
    val_curve: tuple[tuple[float, float], ...] = ()  # (lambda, mean normalized val accuracy) over the grid


def tune_lambda(
    testbed: Testbed,
    tasks: Sequence[str],
    build: Callable[[float], StateDict],
    grid: Sequence[float] = LAMBDA_GRID,
) -> Tuned:
    """Choose lambda in `grid` maximizing the mean normalized val accuracy of `build(lambda)` over `tasks`.

    Args:
        testbed: the testbed whose experts and heads score the merged state.
        tasks: the tasks merged (and scored).
        build: lambda -> merged state dict.
        grid: candidate lambdas; the first best (smallest, in grid order) wins ties.
    """
    require(len(grid) > 0, "The lambda grid is empty; expected at least one value.")
    best: tuple[float, Scores, StateDict] | None = None
    curve = []
    for lam in grid:
        state = build(float(lam))
        val = evaluate(testbed, state, tasks, "val")
        curve.append((float(lam), val.mean_normalized))
        if best is None or val.mean_normalized > best[1].mean_normalized:
            best = (float(lam), val, state)
    assert best is not None
    lam, val, state = best
    return Tuned(lam, val, evaluate(testbed, state, tasks, "test"), state, tuple(curve))


def tuned_merge(
    testbed: Testbed,
    tasks: Sequence[str],
    method: str,
    grid: Sequence[float] = LAMBDA_GRID,
    **params: Any,
) -> Tuned:
    """Merge the experts of `tasks` with `method`; lambda_ tuned on val over `grid` if the method has one."""
    if "lambda_" not in method_parameters(method):
        state = merge_tasks(testbed, tasks, method, **params)
        return Tuned(None, evaluate(testbed, state, tasks, "val"), evaluate(testbed, state, tasks, "test"), state)
    return tune_lambda(testbed, tasks, lambda lam: merge_tasks(testbed, tasks, method, lambda_=lam, **params), grid)


def task_subsets(tasks: Sequence[str], size: int, count: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Up to `count` distinct subsets of `size` tasks: all of them if there are at most `count`, else a seeded
    random choice (the same for every method, so methods are compared on the same subsets)."""
    require(1 <= size <= len(tasks), f"size={size} is out of range; expected 1 <= size <= {len(tasks)}.")
    require(count >= 1, f"count={count} is not positive; expected at least one subset.")
    if math.comb(len(tasks), size) <= count:
        return [tuple(c) for c in itertools.combinations(tasks, size)]
    rng = random.Random(f"{seed}-{size}")  # stable across processes (no hash randomization)
    chosen: set[tuple[str, ...]] = set()
    while len(chosen) < count:
        chosen.add(tuple(sorted(rng.sample(list(tasks), size), key=list(tasks).index)))
    return sorted(chosen, key=lambda c: [list(tasks).index(t) for t in c])


def table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Plain-text table: one line per row name, one column per key (default: the keys of the first row, in order)."""
    if columns is None:
        columns = list(next(iter(rows.values()), {}))
    first = max([len(name) for name in rows] + [0])
    widths = [max(len(c), digits + 3) for c in columns]
    lines = [" " * first + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for name, row in rows.items():
        cells = [f"{row[c]:.{digits}f}" if c in row else "-" for c in columns]
        lines.append(f"{name:<{first}}" + "".join(f"  {v:>{w}}" for v, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


_CACHED = 8  # merged task vectors kept by a method_builder (more than the subsets of one size)

# (tasks, lambda or None) -> merged state dict
Builder = Callable[[Sequence[str], float | None], StateDict]


def has_lambda(method: str) -> bool:
    """Whether engine method `method` has a lambda_ parameter."""
    return "lambda_" in method_parameters(method)


def method_builder(testbed: Testbed, method: str, **params: Any) -> Builder:
    """A `Builder` merging the tasks' experts with engine method `method` (lambda ignored without a lambda_).

    Every engine method with a lambda_ returns base + lambda_ * (merged task vector), so the merge is computed once
    per task subset at lambda_ = 1 (the last `_CACHED` subsets are kept) and rescaled for each lambda of a search.
    """
    cache: OrderedDict[tuple[str, ...], StateDict] = OrderedDict()

    def build(tasks: Sequence[str], lam: float | None) -> StateDict:
        if lam is None or not has_lambda(method):
            return merge_tasks(testbed, tasks, method, **params)
        key = tuple(tasks)
        if key not in cache:
            merged = merge_tasks(testbed, tasks, method, **params, lambda_=1.0)
            cache[key] = {n: merged[n].float() - testbed.base[n].float() for n in merged}  # the merged task vector
            if len(cache) > _CACHED:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return {n: (b.float() + lam * cache[key][n]).to(b.dtype) for n, b in testbed.base.items()}

    return build


def tune_shared_lambda(
    testbed: Testbed,
    subsets: Sequence[Sequence[str]],
    build: Builder,
    grid: Sequence[float] | None = LAMBDA_GRID,
) -> list[Tuned]:
    """One lambda for every subset: the grid value maximizing the mean over `subsets` of the mean normalized val
    accuracy (the first best wins ties); returns each subset's merge at that lambda. `grid=None`: no lambda (each
    subset built with `build(tasks, None)`)."""
    require(len(subsets) > 0, "No task subsets; expected at least one.")
    curve: list[tuple[float, float]] = []
    best: tuple[float | None, float] = (None, -math.inf)
    for lam in grid if grid is not None else ():
        score = sum(evaluate(testbed, build(tasks, float(lam)), tasks, "val").mean_normalized for tasks in subsets)
        curve.append((float(lam), score / len(subsets)))
        if curve[-1][1] > best[1]:
            best = (float(lam), curve[-1][1])
    require(grid is None or len(curve) > 0, "The lambda grid is empty; expected at least one value or None.")
    out = []
    for tasks in subsets:
        state = build(tasks, best[0])
        val, test = evaluate(testbed, state, tasks, "val"), evaluate(testbed, state, tasks, "test")
        out.append(Tuned(best[0], val, test, state, tuple(curve)))
    return out


def sweep(
    testbed: Testbed,
    subsets: Mapping[int, Sequence[Sequence[str]]],
    builders: Mapping[str, tuple[Builder, Sequence[float] | None]],
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[int, list[Tuned]]]:
    """Every method on every subset: method -> size -> the subsets' `Tuned` (lambda shared within a size).

    Args:
        testbed: experts and heads.
        subsets: size -> the task subsets of that size (the same for every method).
        builders: method name -> (builder, lambda grid or None).
        log: called with one line per (method, size).
    """
    out: dict[str, dict[int, list[Tuned]]] = {}
    for name, (build, grid) in builders.items():
        out[name] = {}
        for size, chosen in subsets.items():
            out[name][size] = tune_shared_lambda(testbed, chosen, build, grid)
            if log is not None:
                mean = sum(t.test.mean_normalized for t in out[name][size]) / len(chosen)
                log(f"{name:>18} size {size}: lambda {out[name][size][0].lambda_}, test normalized {mean:.4f}")
    return out


@dataclass(frozen=True)
class Setting:
    """One budget of a vision-testbed check: the testbed presets, which subsets are merged, what is scored."""

    vision: str  # "full" | "quick" | "tiny": the VisionRecipe preset
    text: str | None  # the TextRecipe preset, None to skip the text track
    subsets: int  # task subsets per size (fewer when fewer exist)
    sizes: tuple[int, ...] | None = None  # numbers of tasks merged (None: 2 .. all); sizes above all are dropped
    limit: tuple[tuple[str, int], ...] = ()  # (split, examples) scored per task: Subsampled

    def vision_testbed(self) -> Any:
        """The vision testbed of this setting (built or loaded), subsampled as `limit` says."""
        from paperzoo.efficiency.merging.testbed import VisionRecipe, vision_testbed

        testbed = vision_testbed(getattr(VisionRecipe, self.vision)(), progress=False)
        return Subsampled(testbed, dict(self.limit)) if self.limit else testbed

    def task_sizes(self, count: int) -> list[int]:
        """The numbers of tasks merged, for a testbed of `count` tasks (always including all of them)."""
        return sorted({k for k in (self.sizes or range(2, count + 1)) if 2 <= k <= count} | {count})


def summarize(results: Mapping[int, list[Tuned]]) -> dict[str, float]:
    """Per size k: mean and spread (population std over subsets) of the normalized test accuracy, the lambda, and
    the mean absolute test accuracy."""
    out: dict[str, float] = {}
    for size, tuned in results.items():
        values = [t.test.mean_normalized for t in tuned]
        out[f"normalized_k{size}"] = statistics.fmean(values)
        out[f"normalized_std_k{size}"] = statistics.pstdev(values)
        out[f"accuracy_k{size}"] = statistics.fmean(t.test.mean_accuracy for t in tuned)
        if tuned[0].lambda_ is not None:
            out[f"lambda_k{size}"] = float(tuned[0].lambda_)
    return out
