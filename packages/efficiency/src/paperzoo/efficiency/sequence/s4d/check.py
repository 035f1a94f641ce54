"""Claim check for S4D (CATALOG 66, arXiv:2206.11893): on the CPU-scaled ListOps and Pathfinder of the S4 check,
the diagonal S4D with a structured initialisation (S4D-Lin, S4D-Inv, S4D-LegS) is at or near S4, and the structured
initialisations beat a random diagonal one.

Every model is the same `SequenceModel` classifier (see `sequence.s4.check`, whose helpers this reuses) with a
bidirectional SSM mixer: S4 (DPLR, HiPPO-LegS) as the reference point, and S4D (ZOH, the paper's default) with the
Lin, Inv, LegS and random initialisations (random: Re lambda ~ -U(0, 1), Im lambda = exp(N(0, 1)), B = 1, drawn per
channel with a fixed seed). Same data, batch order, step budget, optimizer (AdamW; A, B, dt at `ssm_lr` without
weight decay) and schedule for all.

Decision rule (fixed before the full run), on each task:
- near S4: S4D-X test accuracy - S4 test accuracy >= -`NEAR` for each X in Lin, Inv, LegS (at most three accuracy
  points below S4, or above it);
- initialisation matters: the mean test accuracy of Lin, Inv and LegS - the random init's >= `MARGIN`.
Every variant's figures are recorded.
"""

import statistics
from dataclasses import replace

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.efficiency.sequence.s4.check import (
    FULL as S4_FULL,
)
from paperzoo.efficiency.sequence.s4.check import (
    QUICK,
    Setting,
    config_record,
    lra_datamodules,
    majority_accuracy,
    s4_args,
    summary,
    train_variant,
)

NEAR = 0.03
MARGIN = 0.01
STRUCTURED = ("lin", "inv", "legs")
FULL = replace(S4_FULL, steps={"listops": 250, "pathfinder": 250})  # 5 models per task within the full budget


def check(quick: bool = False) -> ClaimResult:
    with torch_threads(1):
        return _check(QUICK if quick else FULL)


def _check(setting: Setting) -> ClaimResult:
    datamodules = lra_datamodules(setting)
    names = {init: f"S4D-{init.capitalize() if init != 'legs' else 'LegS'}" for init in (*STRUCTURED, "random")}
    results: dict[str, dict[str, float]] = {"S4": {}} | {name: {} for name in names.values()}
    criteria = []
    for task, data in datamodules.items():
        steps = setting.steps[task]
        accuracy = {}
        s4 = train_variant(setting, data, steps, "s4", s4_args(setting, data))
        results["S4"] |= summary(s4, task)
        for init, name in names.items():
            args = {"d_state": setting.d_state, "init": init, "bidirectional": True, "init_seed": setting.seed}
            figures = train_variant(setting, data, steps, "s4d", args)
            results[name] |= summary(figures, task)
            accuracy[init] = figures.accuracy
        for init in STRUCTURED:
            criteria.append(
                Criterion(f"{task}: {names[init]} - S4 test accuracy", accuracy[init] - s4.accuracy, ">=", -NEAR)
            )
        structured = statistics.fmean(accuracy[init] for init in STRUCTURED)
        results["S4D structured mean"] = results.get("S4D structured mean", {}) | {f"{task} test acc": structured}
        criteria.append(
            Criterion(
                f"{task}: mean(Lin, Inv, LegS) - random init test accuracy",
                structured - accuracy["random"],
                ">=",
                MARGIN,
            )
        )
    majority = {f"{task} majority-class acc": majority_accuracy(data) for task, data in datamodules.items()}
    method = {f"{name} {key}": value for name in (names[i] for i in STRUCTURED) for key, value in results[name].items()}
    return ClaimResult(
        key="s4d",
        claim=(
            "A diagonal SSM (S4D) with a structured initialisation (Lin, Inv, LegS) matches S4 on long-range "
            "classification, and its initialisation matters: the structured ones beat a random diagonal one."
        ),
        paper_reported=(
            "S4D (arXiv:2206.11893, Table 3, LRA): ListOps S4D-LegS 60.47, S4D-Inv 60.18, S4D-Lin 60.52 vs S4 59.60; "
            "Pathfinder 94.2 / 93.78 / 93.96 vs S4 94.20; Section 5 ablations: random imaginary parts or a random "
            "dense A perform worse than the structured initialisations."
        ),
        decision_rule=(
            f"on each task: S4D-X - S4 test accuracy >= -{NEAR} for X in Lin, Inv, LegS; mean(Lin, Inv, LegS) - "
            f"random init >= {MARGIN} (same SequenceModel size, data, batch order, steps, optimizer, schedule; "
            "bidirectional, ZOH)"
        ),
        method=method | majority,
        baselines={name: figures for name, figures in results.items() if name not in {names[i] for i in STRUCTURED}},
        criteria=criteria,
        config=config_record(setting, datamodules) | {"s4d discretization": "zoh", "near": NEAR, "margin": MARGIN},
    )
