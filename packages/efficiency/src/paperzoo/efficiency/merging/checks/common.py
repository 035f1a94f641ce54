"""Shared machinery of the merging claim checks on the testbed (`paperzoo.efficiency.merging.testbed`).

- `evaluate`: a merged backbone (vision) or model (text) scored on each task -> absolute accuracy and accuracy
  normalized by that task's expert (the TIES/PCB papers' "normalized accuracy": merged / individual fine-tuned).
  On the vision track the backbone is evaluated with each task's own fine-tuned head.
- `tune_lambda` / `tuned_merge`: the scaling coefficient lambda_ of a merge chosen on the **val** split over a small
  shared grid (`LAMBDA_GRID`) by the mean normalized val accuracy (ties go to the smaller lambda), then scored on
  test. Methods without lambda_ (plain averaging) are scored once.
- `task_subsets`: fixed, seeded subsets of the tasks of a given size (all of them when there are few).
- `table`: a plain-text table of figures.

Both testbed tracks fit the `Testbed` protocol (`experts`, `base`, `expert_accuracy`, `accuracy(state, task,
split)`), so the text track's corpora are "tasks" here too (next-byte top-1 accuracy).
"""

import itertools
import math
import random
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from paperzoo.core.errors import require
from paperzoo.efficiency.merging.procedure import merge, method_parameters
from paperzoo.efficiency.merging.task_vector import StateDict

__all__ = [
    "LAMBDA_GRID",
    "Scores",
    "Testbed",
    "Tuned",
    "evaluate",
    "expert_accuracy",
    "merge_tasks",
    "table",
    "task_subsets",
    "tune_lambda",
    "tuned_merge",
]

# Task arithmetic over K summed task vectors peaks near lambda ~ 1/K..1; TIES/PCB (means, not sums) near 1-2.
LAMBDA_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0)


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
