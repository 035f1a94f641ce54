"""Diagnostics of a built testbed: every expert on every task, plain averaging of the experts, task-vector cosines.

These are what make a testbed fit for testing merging claims: each expert must beat the base backbone's linear probe
on its own task, the task vectors must point different ways, and the plain average of the experts must lose clearly
against the experts (otherwise no merging method has anything to improve on).
"""

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from paperzoo.efficiency.merging.testbed.build import StateDict
from paperzoo.efficiency.merging.testbed.text import TextTestbed
from paperzoo.efficiency.merging.testbed.vision import VisionTestbed


def average(states: Sequence[Mapping[str, Tensor]]) -> StateDict:
    """The elementwise mean of state dicts with the same keys (plain weight averaging)."""
    return {name: torch.stack([s[name].float() for s in states]).mean(0) for name in states[0]}


def task_vector_cosines(base: Mapping[str, Tensor], experts: Mapping[str, Mapping[str, Tensor]]) -> dict[str, float]:
    """ "a|b" -> cosine of the two flattened task vectors (expert - base over every tensor), for each pair."""
    names = list(experts)
    flat = {n: torch.cat([(experts[n][k].float() - base[k].float()).flatten() for k in base]) for n in names}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"{a}|{b}"] = float(torch.nn.functional.cosine_similarity(flat[a], flat[b], dim=0))
    return out


def relative_update(base: Mapping[str, Tensor], expert: Mapping[str, Tensor]) -> float:
    """||expert - base|| / ||base|| over all tensors."""
    delta = sum(float((expert[k].float() - base[k].float()).square().sum()) for k in base)
    norm = sum(float(base[k].float().square().sum()) for k in base)
    return (delta / norm) ** 0.5


def vision_table(testbed: VisionTestbed) -> dict[str, dict[str, float]]:
    """Backbone -> (task -> test accuracy with that task's fine-tuned head). Rows: "base+probe" (the base backbone
    with each task's linear-probe head), every expert, and "average" (the mean of all expert backbones)."""
    table = {"base+probe": {t: testbed.probe_accuracy[t] for t in testbed.tasks}}
    for expert in testbed.tasks:
        table[expert] = {t: testbed.accuracy(testbed.experts[expert], t) for t in testbed.tasks}
    merged = average(list(testbed.experts.values()))
    table["average"] = {t: testbed.accuracy(merged, t) for t in testbed.tasks}
    return table


def _format(table: Mapping[str, Mapping[str, float]], columns: Sequence[str], digits: int = 3) -> str:
    width = max(12, *(len(c) for c in columns))
    rows = [" " * 16 + "".join(f"{c:>{width + 1}}" for c in columns)]
    for name, row in table.items():
        rows.append(f"{name:<16}" + "".join(f"{row[c]:>{width + 1}.{digits}f}" for c in columns))
    return "\n".join(rows)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _cosines(base: Mapping[str, Tensor], experts: Mapping[str, Mapping[str, Tensor]]) -> str:
    return ", ".join(f"{k} {v:+.3f}" for k, v in task_vector_cosines(base, experts).items())


def vision_report(testbed: VisionTestbed, seconds: float) -> str:
    table = vision_table(testbed)
    tasks = list(testbed.tasks)
    diagonal = [table[t][t] for t in tasks]
    lines = [
        f"vision testbed {testbed.directory} ({'loaded' if testbed.loaded_from_cache else 'built'} in {seconds:.1f} s;"
        f" original build {testbed.build_seconds:.1f} s)",
        "test accuracy, rows = backbone (with each column task's own fine-tuned head; base+probe = base backbone with"
        " a linear probe):",
        _format(table, tasks),
        f"mean: experts (own task) {_mean(diagonal):.3f}, base+probe {_mean(table['base+probe'].values()):.3f},"
        f" average merge {_mean(table['average'].values()):.3f}",
        "task-vector cosines: " + _cosines(testbed.base, testbed.experts),
        "relative update ||tau||/||base||: "
        + ", ".join(f"{t} {relative_update(testbed.base, testbed.experts[t]):.3f}" for t in tasks),
    ]
    for task in tasks:
        lines.append(f"path {task}: {testbed.paths[task]}")
    lines.append(f"path base: {testbed.paths['base']}")
    return "\n".join(lines)


def text_report(testbed: TextTestbed, seconds: float) -> str:
    corpora = list(testbed.base_loss)
    table = {"base": testbed.base_loss} | testbed.loss_table
    merged = average(list(testbed.experts.values()))
    table["average"] = {c: testbed.loss(merged, c) for c in corpora}
    lines = [
        f"text testbed {testbed.directory} ({'loaded' if testbed.loaded_from_cache else 'built'} in {seconds:.1f} s;"
        f" original build {testbed.build_seconds:.1f} s)",
        "test next-byte loss (nats), rows = model, columns = corpus:",
        _format(table, corpora),
        "expert accuracy on own corpus: " + ", ".join(f"{c} {a:.3f}" for c, a in testbed.expert_accuracy.items()),
        "task-vector cosines: " + _cosines(testbed.base, testbed.experts),
        "relative update ||tau||/||base||: "
        + ", ".join(f"{c} {relative_update(testbed.base, testbed.experts[c]):.3f}" for c in testbed.corpora),
    ]
    for corpus in testbed.corpora:
        lines.append(f"path {corpus}: {testbed.paths[corpus]}")
    lines.append(f"path base: {testbed.paths['base']}")
    return "\n".join(lines)
