"""The claim-check harness: `ClaimResult`, its JSON files and the verdict table.

A check reproduces a paper's key claim at small scale against a baseline trained in the same run on the same data
and budget. It can fail; a failing check is written and reported as failing, with its figures.
"""

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from paperzoo.core.io import atomic_write_text

RESULTS_DIR = Path("benchmarks/results")


@dataclass
class Criterion:
    """One comparison of the decision rule: `measured <op> threshold`, e.g. "wsd - cosine <= 0.0"."""

    name: str
    measured: float
    op: str  # "<=" or ">="
    threshold: float

    @property
    def passed(self) -> bool:
        return self.measured <= self.threshold if self.op == "<=" else self.measured >= self.threshold


@dataclass
class ClaimResult:
    """The record of one claim check (`benchmarks/results/KEY.json`).

    Args:
        key: the method's card key.
        claim: the claim, in one sentence.
        paper_reported: what the paper reported, with units.
        decision_rule: the rule that decides the verdict, in words.
        method: our figures for the method, name -> value.
        baselines: our figures for each baseline, baseline -> (name -> value).
        criteria: the comparisons the verdict is the conjunction of.
        curves: named series of (x, y) points for the plot, e.g. loss against step.
        plot: how to draw the curves: any of "xlabel", "ylabel" (default step / smoothed train loss), "xscale",
            "yscale" ("linear" or "log").
        quick: whether this was the quick (< 60 s) mode.
        config: the settings of the run (model size, steps, seeds).
    """

    key: str
    claim: str
    paper_reported: str
    decision_rule: str
    method: dict[str, float]
    baselines: dict[str, dict[str, float]]
    criteria: list[Criterion]
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    plot: dict[str, str] = field(default_factory=dict)
    quick: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    runtime_s: float = 0.0
    environment: dict[str, str] = field(default_factory=dict)  # filled by run_check
    finished_at: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def to_json(self) -> str:
        record = asdict(self)
        record["verdict"] = "pass" if self.passed else "fail"
        for row, criterion in zip(record["criteria"], self.criteria, strict=True):
            row["passed"] = criterion.passed
        return json.dumps(record, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ClaimResult":
        record = json.loads(text)
        record.pop("verdict", None)
        criteria = [Criterion(**{k: v for k, v in c.items() if k != "passed"}) for c in record.pop("criteria")]
        curves = {name: [tuple(p) for p in points] for name, points in record.pop("curves", {}).items()}
        return cls(criteria=criteria, curves=curves, **record)  # type: ignore[arg-type]

    def table(self) -> str:
        """The verdict table printed by `paperzoo check`."""
        lines = [f"claim   {self.claim}", f"paper   {self.paper_reported}", f"rule    {self.decision_rule}", ""]
        width = max(len(c.name) for c in self.criteria)
        for c in self.criteria:
            mark = "PASS" if c.passed else "FAIL"
            lines.append(f"  {mark}  {c.name:<{width}}  {c.measured:+.4f} {c.op} {c.threshold:+.4f}")
        lines += ["", f"verdict {'PASS' if self.passed else 'FAIL'}  ({self.runtime_s:.0f} s, quick={self.quick})"]
        return "\n".join(lines)


def environment_info() -> dict[str, str]:
    """Versions and hardware a result was measured with."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    import lightning

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "git_commit": commit or "unknown",
    }


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on `count` intra-op threads, restoring the previous setting after.

    Claim checks of models with a few thousand parameters run on one thread: on a shared 2-core machine, two spinning
    OpenMP threads made such training steps 4-100x slower than one (measured for DLinear, PatchTST, TSMixer, MIGA).
    Every model of a check runs under the same setting, so the time ratios it reports stay comparable.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_trainer(**settings: Any) -> Any:
    """A `lightning.Trainer` for the training inside a claim check: one CPU device, and no logger, checkpoints,
    progress bar, model summary or sanity validation. `settings` (max_steps, callbacks, ...) add to or override
    these."""
    import lightning as L  # here, not at the top: reading result files must not pay lightning's import time

    quiet = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**quiet, **settings})


def run_check(check: Any, quick: bool) -> ClaimResult:
    """Call `check(quick=...)`, timing it and recording the environment."""
    started = time.perf_counter()
    result: ClaimResult = check(quick=quick)
    result.runtime_s = time.perf_counter() - started
    result.quick = quick
    result.environment = environment_info()
    result.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return result


def result_path(key: str, quick: bool, results_dir: Path = RESULTS_DIR) -> Path:
    """Full-mode results are committed as KEY.json; quick ones go to KEY.quick.json beside them."""
    return results_dir / (f"{key}.quick.json" if quick else f"{key}.json")


def write_result(result: ClaimResult, path: Path) -> None:
    atomic_write_text(path, result.to_json())


def read_results(results_dir: Path = RESULTS_DIR) -> dict[str, ClaimResult]:
    """Every result in `results_dir` by key, a full-mode result taking precedence over a quick one."""
    results: dict[str, ClaimResult] = {}
    for path in sorted(results_dir.glob("*.json"), key=lambda p: p.name.endswith(".quick.json"), reverse=True):
        result = ClaimResult.from_json(path.read_text())
        results[result.key] = result
    return results
