"""Claim check for S4 (CATALOG 44, arXiv:2111.00396): on CPU-scaled Long Range Arena tasks (generated ListOps and
Pathfinder), S4 beats a transformer of the same size trained the same way.

Every model is the shared `SequenceModel` (embedding, `depth` pre-norm residual blocks of mixer + SwiGLU MLP, masked
mean pooling, a linear head) with the same width, depth and MLP; only the token mixer differs: bidirectional S4
(HiPPO-LegS, `l_max` = the task's length) or bidirectional softmax attention with RoPE. All runs go through
`sequence.harness.train_and_evaluate` with the same data, batch order (seed), step budget, optimizer (AdamW at `lr`
for every weight; the SSM's A, B and dt at `ssm_lr` without weight decay, the reference code's recipe, which has no
counterpart in attention) and warmup-stable-decay schedule; the figure is test accuracy after the last step.

Decision rule (fixed before the full run): on each task, S4's test accuracy minus the transformer's >= `MARGIN`
(one accuracy point, so that a tie is not counted as a win). Steps/s, peak memory and parameters are recorded.

The shared helpers here (`Setting`, `lra_datamodules`, `train_variant`) are reused by the S4D check.
"""

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.efficiency.sequence.harness import RunFigures, train_and_evaluate
from paperzoo.efficiency.sequence.lra.base import SequenceDataModule
from paperzoo.efficiency.sequence.lra.listops import ListOpsDataModule
from paperzoo.efficiency.sequence.lra.pathfinder import PathfinderDataModule
from paperzoo.efficiency.sequence.ssm import SSMAdamW
from paperzoo.efficiency.sequence.task import SequenceClassificationTask

log = logging.getLogger(__name__)

MARGIN = 0.01


@dataclass(frozen=True)
class Setting:
    """One budget: model size, optimisation, and each task's data and steps."""

    dim: int = 32
    depth: int = 2
    mlp_ratio: float = 2.0
    d_state: int = 64
    n_heads: int = 4
    lr: float = 3e-3
    ssm_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    seed: int = 0
    listops: dict[str, Any] = field(default_factory=dict)
    pathfinder: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)


QUICK = Setting(
    dim=16,
    d_state=16,
    listops=dict(num_train=512, num_val=64, num_test=128, min_length=16, max_length=64, batch_size=16),
    pathfinder=dict(
        resolution=16, num_train=512, num_val=64, num_test=128, contour_length=5, num_distractors=1, batch_size=16
    ),
    steps={"listops": 25, "pathfinder": 25},
)
FULL = Setting(
    listops=dict(num_train=4000, num_val=200, num_test=500, min_length=16, max_length=256, batch_size=32),
    pathfinder=dict(
        resolution=16, num_train=4000, num_val=200, num_test=500, contour_length=5, num_distractors=1, batch_size=32
    ),
    steps={"listops": 400, "pathfinder": 400},
)


def lra_datamodules(setting: Setting) -> dict[str, SequenceDataModule]:
    """The CPU-scaled ListOps and Pathfinder of `setting` (generated once, then read from the cache)."""
    return {
        "listops": ListOpsDataModule(seed=setting.seed, **setting.listops),
        "pathfinder": PathfinderDataModule(seed=setting.seed, **setting.pathfinder),
    }


def train_variant(
    setting: Setting, datamodule: SequenceDataModule, steps: int, mixer: str, mixer_args: dict[str, Any]
) -> RunFigures:
    """Build the same-size classifier with `mixer` (weights seeded by `setting.seed`) and train it for `steps`."""
    L.seed_everything(setting.seed, verbose=False)
    task = SequenceClassificationTask(
        vocab_size=datamodule.vocab_size,
        num_classes=datamodule.num_classes,
        dim=setting.dim,
        depth=setting.depth,
        mixer=mixer,
        mixer_args=mixer_args,
        mlp_ratio=setting.mlp_ratio,
        pooling="mean",
        optimizer=lambda p: SSMAdamW(p, lr=setting.lr, ssm_lr=setting.ssm_lr, weight_decay=setting.weight_decay),
        lr_scheduler=lambda o: WarmupStableDecay(
            o, total_steps=steps, warmup_steps=max(1, int(setting.warmup_fraction * steps)), decay_steps=0.2
        ),
    )
    figures = train_and_evaluate(task, datamodule, max_steps=steps, seed=setting.seed)
    log.info("%s on %s: %s", mixer, type(datamodule).__name__, figures)
    return figures


def attention_args(setting: Setting, datamodule: SequenceDataModule) -> dict[str, Any]:
    return {"n_heads": setting.n_heads, "causal": False, "max_seq_len": datamodule.seq_len}


def s4_args(setting: Setting, datamodule: SequenceDataModule) -> dict[str, Any]:
    return {"d_state": setting.d_state, "l_max": datamodule.seq_len, "bidirectional": True}


def summary(figures: RunFigures, task: str) -> dict[str, float]:
    """The figures of one run, named by task."""
    return {
        f"{task} test acc": figures.accuracy,
        f"{task} test loss": figures.test_loss,
        f"{task} steps/s": figures.steps_per_s,
        f"{task} peak MiB": figures.peak_memory_mb,
        f"{task} params": float(figures.parameters),
    }


def check(quick: bool = False) -> ClaimResult:
    with torch_threads(1):
        return _check(QUICK if quick else FULL)


def _check(setting: Setting) -> ClaimResult:
    datamodules = lra_datamodules(setting)
    results: dict[str, dict[str, float]] = {"S4": {}, "transformer": {}}
    criteria = []
    for task, data in datamodules.items():
        steps = setting.steps[task]
        s4 = train_variant(setting, data, steps, "s4", s4_args(setting, data))
        attention = train_variant(setting, data, steps, "attention", attention_args(setting, data))
        results["S4"] |= summary(s4, task)
        results["transformer"] |= summary(attention, task)
        criteria.append(
            Criterion(f"{task}: S4 - transformer test accuracy", s4.accuracy - attention.accuracy, ">=", MARGIN)
        )
    majority = {f"{task} majority-class acc": majority_accuracy(data) for task, data in datamodules.items()}
    return ClaimResult(
        key="s4",
        claim=(
            "S4 (HiPPO-LegS DPLR SSM, convolution kernel by the Cauchy kernel) beats a same-size transformer on "
            "long-range classification (LRA ListOps and Pathfinder)."
        ),
        paper_reported=(
            "S4 (arXiv:2111.00396, Table 4, LRA): ListOps 59.60 vs Transformer 36.37; Pathfinder 94.20 vs 71.40; "
            "Path-X 96.35 where every transformer variant fails (50)."
        ),
        decision_rule=(
            f"on each task, S4 test accuracy - transformer test accuracy >= {MARGIN} (same SequenceModel width, "
            "depth, MLP and head; same data, batch order, steps, optimizer and schedule; bidirectional mixers)"
        ),
        method=results["S4"] | majority,
        baselines={"transformer": results["transformer"]},
        criteria=criteria,
        config=config_record(setting, datamodules),
    )


def majority_accuracy(datamodule: SequenceDataModule) -> float:
    """Test accuracy of always predicting the most frequent training label (the floor every model must beat)."""
    datamodule.setup("fit")
    train, test = datamodule.train_set.fields["label"], datamodule.test_set.fields["label"]
    return float((test == train.bincount().argmax()).float().mean())


def config_record(setting: Setting, datamodules: dict[str, SequenceDataModule]) -> dict[str, Any]:
    return {
        **asdict(setting),
        "sequence lengths": {task: data.seq_len for task, data in datamodules.items()},
        "pooling": "masked mean",
        "optimizer": "AdamW (SSM A, B, dt: ssm_lr, no weight decay), WSD schedule (warmup, 20% decay)",
        "torch threads": 1,
    }
