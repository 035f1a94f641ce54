"""Do the TIES / PCB / Fisher merging verdicts depend on the fine-tuning regime?

The merging testbed's full recipe (`VisionRecipe.full()`: LP-FT, 400 fine-tuning steps at lr 3e-4) gives small,
nearly orthogonal task vectors, and every merging method lands within about a point of the others (benchmarks/results/
{ties,pcb,fisher}.json). This study re-runs the same machinery (`merging.checks.{ties,pcb,fisher}.run`, the same
task subsets, lambda grid, subsampled val/test splits and criteria) on `VisionRecipe.long()`: the same base, data and
seed with a stronger fine-tuning regime chosen a priori (3x the fine-tuning steps, 3x the peak fine-tuning learning
rate). It measures; it does not change the committed verdicts, which stay those of the full regime.

The full regime's figures are read from benchmarks/results/{ties,pcb,fisher}.json (not recomputed); only the task-vector
geometry and the probe accuracies (stored in the testbed cache) are read from the cached full testbed. One deviation
from the committed TIES check: its text track is skipped here (the question is about the vision experts).

Writes benchmarks/studies/merging_finetune_regime.{json,md}. Run:
    /tmp/heavy .venv/bin/python benchmarks/studies/merging_finetune_regime.py
"""

import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from paperzoo.core.checks import ClaimResult, torch_threads
from paperzoo.efficiency.merging.checks import fisher, pcb, ties
from paperzoo.efficiency.merging.testbed import VisionRecipe, vision_testbed

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
SIZES = (2, 3, 4, 5, 6)

# (row label, check key, where in that check's record, figure name in it)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("averaging", "ties", "average"),
    ("task arithmetic", "ties", "task_arithmetic"),
    ("TIES", "ties", "ties"),
    ("trim-only", "ties", "trim_only"),
    ("elect-only", "ties", "elect_only"),
    ("PCB", "pcb", "pcb"),
    ("Fisher", "fisher", "fisher"),
)


def geometry(testbed: Any) -> dict[str, Any]:
    """Task-vector norms (||tau|| / ||base||, backbone floats) and pairwise cosines of the testbed's experts."""
    names = [n for n, t in testbed.base.items() if t.is_floating_point()]
    base = torch.cat([testbed.base[n].float().flatten() for n in names])
    taus = {
        t: torch.cat([(testbed.experts[t][n].float() - testbed.base[n].float()).flatten() for n in names])
        for t in testbed.tasks
    }
    tasks = list(testbed.tasks)
    relative = {t: float(taus[t].norm() / base.norm()) for t in tasks}
    cosines = {
        f"{a}|{b}": float(torch.nn.functional.cosine_similarity(taus[a], taus[b], dim=0))
        for i, a in enumerate(tasks)
        for b in tasks[i + 1 :]
    }
    return {
        "relative_norm": relative,
        "relative_norm_min": min(relative.values()),
        "relative_norm_max": max(relative.values()),
        "cosine": cosines,
        "cosine_min": min(cosines.values()),
        "cosine_max": max(cosines.values()),
        "cosine_mean": statistics.fmean(cosines.values()),
    }


def probe_figures(testbed: Any, subsets: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, float]:
    """Base backbone + linear probe, normalized by the expert (whole test split, as stored by the build): per size,
    the mean over the check's subsets of the mean over their tasks; plus the expert and probe mean accuracies."""
    normalized = {t: testbed.probe_accuracy[t] / testbed.expert_accuracy[t] for t in testbed.tasks}
    out = {
        f"normalized_k{k}": statistics.fmean(statistics.fmean(normalized[t] for t in s) for s in v)
        for k, v in subsets.items()
    }
    out["probe_accuracy_mean"] = statistics.fmean(testbed.probe_accuracy.values())
    out["expert_accuracy_mean"] = statistics.fmean(testbed.expert_accuracy.values())
    return out


def record_of(result: ClaimResult) -> dict[str, Any]:
    """The record a check would write (`ClaimResult.to_json`), as a dict."""
    return json.loads(result.to_json())


def figure(record: Mapping[str, Any], name: str, k: int) -> float | None:
    """Normalized test accuracy of `name` at k tasks in a check record (the method's own or a baseline's)."""
    row = record["method"] if name == record["key"] else record["baselines"].get(name, {})
    value = row.get(f"normalized_k{k}")
    return None if value is None else float(value)


def run_long() -> tuple[dict[str, dict[str, Any]], Any, float]:
    """The three checks on the long-regime testbed; (key -> record, testbed, build seconds of this call)."""
    started = time.perf_counter()
    testbed = vision_testbed(VisionRecipe.long(), progress=False)
    load_seconds = time.perf_counter() - started
    records = {}
    with torch_threads(1):
        for key, module, setting in (
            ("ties", ties, dataclasses.replace(ties.FULL, vision="long", text=None)),
            ("pcb", pcb, dataclasses.replace(pcb.FULL, vision="long")),
            ("fisher", fisher, dataclasses.replace(fisher.FULL, vision="long")),
        ):
            began = time.perf_counter()
            result = module.run(setting)
            result.runtime_s = time.perf_counter() - began
            records[key] = record_of(result)
            print(f"{key}: {result.runtime_s:.0f} s, verdict {'pass' if result.passed else 'fail'}", flush=True)
    return records, testbed, load_seconds


def markdown(study: Mapping[str, Any]) -> str:
    """The side-by-side table of the two regimes."""
    regimes = ("full", "long")
    full, long = study["recipes"]["full"], study["recipes"]["long"]
    lines = [
        "# Merging verdicts vs fine-tuning regime",
        "",
        f"full: `VisionRecipe.full()` ({full['finetune_steps']} fine-tuning steps, lr {full['lr']:g}); long: "
        f"`VisionRecipe.long()` ({long['finetune_steps']} steps, lr {long['lr']:g}); same base, data, seed, "
        "subsets, lambda grid and criteria. "
        "Full-regime accuracies from benchmarks/results/{ties,pcb,fisher}.json; the committed verdicts are those.",
        "",
        "## Task vectors",
        "",
        "| | full | long |",
        "|---|---|---|",
    ]
    g = {r: study[r]["geometry"] for r in regimes}
    lines.append(
        "| ‖τ‖/‖base‖ (min–max) | "
        + " | ".join(f"{g[r]['relative_norm_min']:.3f}–{g[r]['relative_norm_max']:.3f}" for r in regimes)
        + " |"
    )
    lines.append(
        "| pairwise cosine (min–max, mean) | "
        + " | ".join(
            f"{g[r]['cosine_min']:+.3f}–{g[r]['cosine_max']:+.3f}, {g[r]['cosine_mean']:+.3f}" for r in regimes
        )
        + " |"
    )
    p = {r: study[r]["probe"] for r in regimes}
    lines.append(
        "| mean expert / probe test accuracy | "
        + " | ".join(f"{p[r]['expert_accuracy_mean']:.3f} / {p[r]['probe_accuracy_mean']:.3f}" for r in regimes)
        + " |"
    )
    lines += [
        "",
        "## Normalized test accuracy (mean over the checks' subsets; full | long)",
        "",
        "| method | " + " | ".join(f"k={k}" for k in SIZES) + " |",
        "|---|" + "---|" * len(SIZES),
    ]
    for label in ["base + probe"] + [row[0] for row in ROWS]:
        cells = []
        for k in SIZES:
            values = [study[r]["normalized"][label].get(str(k)) for r in regimes]
            cells.append(" / ".join("-" if v is None else f"{v:.3f}" for v in values))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Criteria (measured; holds?)",
        "",
        "| check | criterion | full | long |",
        "|---|---|---|---|",
    ]
    for key in ("ties", "pcb", "fisher"):
        for a, b in zip(study["full"]["criteria"][key], study["long"]["criteria"][key], strict=True):
            cells = [
                f"{c['measured']:+.4f} {c['op']} {c['threshold']:g}: {'yes' if c['passed'] else 'no'}" for c in (a, b)
            ]
            lines.append(f"| {key} | {a['name']} | " + " | ".join(cells) + " |")
        lines.append(f"| {key} | **verdict** | {study['full']['verdict'][key]} | {study['long']['verdict'][key]} |")
    lines += ["", study["note"], ""]
    return "\n".join(lines)


def regime_summary(records: Mapping[str, Mapping[str, Any]], testbed: Any) -> dict[str, Any]:
    """Geometry, normalized accuracies per method and size, criteria and verdicts of one regime."""
    subsets = records["ties"]["config"]["subsets"]
    probe = probe_figures(testbed, {int(k): v for k, v in subsets.items()})
    normalized: dict[str, dict[str, float | None]] = {
        "base + probe": {str(k): probe.get(f"normalized_k{k}") for k in SIZES}
    }
    for label, key, name in ROWS:
        normalized[label] = {str(k): figure(records[key], name, k) for k in SIZES}
    return {
        "geometry": geometry(testbed),
        "probe": probe,
        "normalized": normalized,
        "criteria": {key: records[key]["criteria"] for key in ("ties", "pcb", "fisher")},
        "verdict": {key: records[key]["verdict"] for key in ("ties", "pcb", "fisher")},
        "subsets": {key: records[key]["config"]["subsets"] for key in ("ties", "pcb", "fisher")},
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    full_records = {key: json.loads((RESULTS / f"{key}.json").read_text()) for key in ("ties", "pcb", "fisher")}
    long_records, long_testbed, long_load = run_long()
    full_testbed = vision_testbed(VisionRecipe.full(), progress=False)  # cached: geometry and probe accuracies only
    same = all(full_records[k]["config"]["subsets"] == long_records[k]["config"]["subsets"] for k in full_records)
    study = {
        "question": "Do the TIES / PCB / Fisher merging verdicts depend on the fine-tuning regime?",
        "recipes": {
            "full": dataclasses.asdict(VisionRecipe.full()),
            "long": dataclasses.asdict(VisionRecipe.long()),
        },
        "full": regime_summary(full_records, full_testbed),
        "long": regime_summary(long_records, long_testbed),
        "long_records": long_records,
        "same_subsets": same,
        "long_testbed_build_seconds": long_testbed.build_seconds,
        "long_testbed_load_seconds_this_run": long_load,
        "seconds": time.perf_counter() - started,
        "note": (
            "The long regime's TIES run skips the committed check's text track (vision only). Base + probe is "
            "normalized on the whole test split (stored by the build); every merge row on the checks' 1000-example "
            "test subsets. Committed verdicts are the full regime's."
        ),
    }
    (HERE / "merging_finetune_regime.json").write_text(json.dumps(study, indent=1) + "\n")
    (HERE / "merging_finetune_regime.md").write_text(markdown(study))
    print(markdown(study))


if __name__ == "__main__":
    main()
