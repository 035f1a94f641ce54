"""The vision track of the merging testbed: one pretrained backbone, one fine-tuned expert per task.

Stands in for the ViT/CLIP task-arithmetic benchmark of the merging papers (8 image-classification experts
fine-tuned from one pretrained model), which cannot run here: no pretrained vision weights ship offline
(/work/shared/DATA.md), and it would not fit a CPU budget. What stays the same: a shared pretrained backbone,
experts that fine-tune every backbone weight from it at a small learning rate with their own classification head,
and merging evaluated by plugging each task's head onto the merged backbone.

Recipe (`VisionRecipe`, `vision_testbed`):
1. Base: `VisionNet` pretrained on data no expert uses (Fashion-MNIST Trouser, Dress and Bag at four rotations, a
   12-way problem: `data.load_pretrain`); only its backbone is kept.
2. Per task: a fresh head on the frozen base backbone trained as a linear probe (`probe_steps`; its test accuracy is
   `probe_accuracy`, the "base backbone + linear probe" reference), then the whole network (backbone and that head)
   fine-tuned for `finetune_steps` at learning rate `lr` (LP-FT, Kumar et al. 2022: starting from a probe head keeps
   the backbone's update small and on-task, the regime in which task vectors add up).
Tasks, their data, splits and licences: `paperzoo.efficiency.merging.testbed.data`.

Measured on the full recipe (0.89M parameters; under 4 min 50 s of CPU on one thread, the quick recipe 28 s; `python -m
paperzoo.efficiency.merging.testbed` prints this table): test accuracy of the base backbone with a linear probe / the
expert / the plain average of the six expert backbones (each with the task's own head): fmnist_tops 0.675 / 0.805 /
0.709, fmnist_footwear 0.901 / 0.963 / 0.911, sklearn_digits 0.933 / 0.981 / 0.936, opencv_digits 0.820 / 0.957 / 0.871,
textures 0.677 / 0.932 / 0.767, lfw_faces 0.900 / 0.975 / 0.925 (40 test faces: steps of 0.025); means 0.818 / 0.935 /
0.853. Task vectors are nearly orthogonal (pairwise cosines -0.00 to +0.08) and small (||tau|| / ||base|| 0.07-0.16).
The quick recipe keeps the ordering (means 0.713 / 0.855 / 0.730).
"""

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from paperzoo.core.checks import torch_threads
from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.testbed.build import (
    StateDict,
    build_lock,
    load_state,
    read_meta,
    save_state,
    testbed_dir,
    train_loop,
    write_meta,
)
from paperzoo.efficiency.merging.testbed.data import (
    PRETRAIN_NUM_CLASSES,
    VISION_TASKS,
    load_pretrain,
    load_task,
    num_classes,
)


class VisionNet(nn.Module):
    """A small conv stem and Linear-ReLU layers (no normalization layers, so every weight is mergeable).

    backbone: conv1 (1 -> c1, 5x5, stride 2) - ReLU - conv2 (c1 -> c2, 3x3, stride 2) - ReLU - flatten -
    fc1 (c2*7*7 -> width) - ReLU - fc2 (width -> width) - ReLU; head: Linear (width -> num_classes).

    Args:
        num_classes: C, the head's outputs.
        width: F, the backbone's feature width.
        channels: (c1, c2) of the conv stem.

    Shapes:
        features: x [N, 1, 28, 28] -> [N, F]; forward: x [N, 1, 28, 28] -> logits [N, C].
    """

    def __init__(self, num_classes: int, width: int = 256, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        require(num_classes > 0, f"num_classes must be positive, got {num_classes}")
        require(width > 0 and min(channels) > 0, f"width and channels must be positive, got {width}, {channels}")
        c1, c2 = channels
        self.backbone = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, c1, 5, stride=2, padding=2),  # 28 -> 14
                act1=nn.ReLU(),
                conv2=nn.Conv2d(c1, c2, 3, stride=2, padding=1),  # 14 -> 7
                act2=nn.ReLU(),
                flatten=nn.Flatten(),
                fc1=nn.Linear(c2 * 7 * 7, width),
                act3=nn.ReLU(),
                fc2=nn.Linear(width, width),
                act4=nn.ReLU(),
            )
        )
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


@dataclass(frozen=True)
class VisionRecipe:
    """How the vision testbed is built; every field enters the cache hash.

    Args:
        tasks: the expert tasks, a subset of `VISION_TASKS`.
        width: `VisionNet` feature width.
        channels: `VisionNet` conv stem channels.
        pretrain_steps: AdamW steps of the base on the pretraining data.
        pretrain_lr: peak learning rate of pretraining (warmup then cosine decay).
        probe_steps: steps of the linear probe (head only, base backbone frozen).
        probe_lr: learning rate of the probe.
        finetune_steps: steps of full fine-tuning per expert.
        lr: peak fine-tuning learning rate (small: the task-arithmetic regime).
        weight_decay: AdamW weight decay of pretraining (fine-tuning uses none, so task vectors hold only the task).
        batch_size: images per step.
        seed: seeds the initialization and every batch order.
    """

    tasks: tuple[str, ...] = VISION_TASKS
    width: int = 256
    channels: tuple[int, int] = (32, 64)
    pretrain_steps: int = 1500
    pretrain_lr: float = 2e-3
    probe_steps: int = 150
    probe_lr: float = 1e-2
    finetune_steps: int = 400
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in VISION_TASKS]
        require(not unknown, f"unknown vision tasks {unknown}; expected a subset of {VISION_TASKS}")
        distinct = len(self.tasks) >= 1 and len(set(self.tasks)) == len(self.tasks)
        require(distinct, f"tasks must be one or more distinct names, got {self.tasks}")
        require(self.pretrain_steps > 0 and self.finetune_steps > 0, "pretrain_steps and finetune_steps must be > 0")
        require(self.probe_steps >= 0, f"probe_steps must be >= 0, got {self.probe_steps}")
        require(self.lr > 0 and self.pretrain_lr > 0 and self.probe_lr > 0, "learning rates must be positive")
        require(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")

    @classmethod
    def full(cls) -> "VisionRecipe":
        """The checks' full-mode testbed (about 6 minutes on one CPU thread)."""
        return cls()

    @classmethod
    def long(cls) -> "VisionRecipe":
        """`full()` with a stronger fine-tuning regime, for `benchmarks/studies/merging_finetune_regime.py` (do the
        merging verdicts depend on how far the experts move?): 3x the fine-tuning steps (1200) at 3x the peak
        fine-tuning learning rate (9e-4); base, probe, data and seed as in `full()`. Chosen before any result (3x
        rather than 4x steps only to fit the build in the time available), not tuned. Build: 564 s CPU, one thread."""
        return replace(cls(), finetune_steps=3 * cls.finetune_steps, lr=3 * cls.lr)

    @classmethod
    def quick(cls) -> "VisionRecipe":
        """The checks' quick-mode testbed (seconds)."""
        return cls(width=128, channels=(16, 32), pretrain_steps=300, probe_steps=60, finetune_steps=120, batch_size=64)

    @classmethod
    def tiny(cls) -> "VisionRecipe":
        """Unit tests: a few seconds, three tasks."""
        return cls(
            tasks=("sklearn_digits", "textures", "lfw_faces"),
            width=32,
            channels=(4, 8),
            pretrain_steps=20,
            probe_steps=5,
            finetune_steps=10,
            batch_size=32,
        )


def _batch(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    index = torch.randint(len(x), (batch_size,), generator=generator)
    return x[index], y[index]


@torch.no_grad()
def _accuracy(net: nn.Module, x: Tensor, y: Tensor, chunk: int = 2048) -> float:
    correct = 0
    for start in range(0, len(x), chunk):
        correct += int((net(x[start : start + chunk]).argmax(-1) == y[start : start + chunk]).sum())
    return correct / len(x)


def _backbone_state(net: VisionNet) -> StateDict:
    return {f"backbone.{k}": v.detach().clone() for k, v in net.backbone.state_dict().items()}


def _head_state(net: VisionNet) -> StateDict:
    return {f"head.{k}": v.detach().clone() for k, v in net.head.state_dict().items()}


@dataclass
class VisionTestbed:
    """A built vision testbed (see the module docstring).

    Attributes:
        recipe: what built it.
        tasks: the expert tasks, in the recipe's order.
        base: the pretrained backbone (keys `backbone.*`).
        experts: task -> fine-tuned backbone (keys `backbone.*`).
        heads: task -> the expert's fine-tuned head (keys `head.*`).
        probe_heads: task -> the linear-probe head trained on the frozen base backbone.
        expert_accuracy: task -> test accuracy of the expert (its backbone and head).
        probe_accuracy: task -> test accuracy of the base backbone with the probe head.
        paths: "base" and each task -> the safetensors file of that backbone.
        directory: the cache directory.
        build_seconds: wall time of the build that produced it (0 for the tiny-recipe tests' cache hit excepted:
            always the original build's time).
        loaded_from_cache: whether this call loaded it instead of training.
    """

    recipe: VisionRecipe
    tasks: tuple[str, ...]
    base: StateDict
    experts: dict[str, StateDict]
    heads: dict[str, StateDict]
    probe_heads: dict[str, StateDict]
    expert_accuracy: dict[str, float]
    probe_accuracy: dict[str, float]
    paths: dict[str, Path]
    directory: Path
    build_seconds: float
    loaded_from_cache: bool
    _data: dict[tuple[str, str], tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ConfigError(f"task {task!r} is not in this testbed; expected one of {self.tasks}")

    def data(self, task: str, split: str = "test") -> tuple[Tensor, Tensor]:
        """`load_task(task, split)`, cached on the testbed (do not modify the returned tensors)."""
        self._check_task(task)
        if (task, split) not in self._data:
            self._data[task, split] = load_task(task, split)  # type: ignore[arg-type]
        return self._data[task, split]

    def network(self, state: Mapping[str, Tensor], task: str, head: Mapping[str, Tensor] | None = None) -> VisionNet:
        """A `VisionNet` with backbone `state` (keys `backbone.*`) and the task's head (or `head`), in eval mode."""
        self._check_task(task)
        net = VisionNet(num_classes(task), self.recipe.width, self.recipe.channels)
        tensors = {**dict(state), **dict(head if head is not None else self.heads[task])}
        missing, unexpected = net.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"the state for task {task!r} does not fit VisionNet: missing {list(missing)[:3]}, "
                f"unexpected {list(unexpected)[:3]}"
            )
        return net.eval()

    def accuracy(
        self, state: Mapping[str, Tensor], task: str, split: str = "test", head: Mapping[str, Tensor] | None = None
    ) -> float:
        """Accuracy of backbone `state` with the task's fine-tuned head (or `head`) on a split of the task."""
        x, y = self.data(task, split)
        return _accuracy(self.network(state, task, head), x, y)


def _pretrain(recipe: VisionRecipe, progress: bool) -> tuple[StateDict, dict[str, Any]]:
    torch.manual_seed(recipe.seed)
    net = VisionNet(PRETRAIN_NUM_CLASSES, recipe.width, recipe.channels)
    x, y = load_pretrain("train")
    generator = torch.Generator().manual_seed(recipe.seed)

    def loss_fn(step: int) -> Tensor:
        xb, yb = _batch(x, y, recipe.batch_size, generator)
        return F.cross_entropy(net(xb), yb)

    net.train()
    losses = train_loop(
        list(net.parameters()),
        loss_fn,
        recipe.pretrain_steps,
        recipe.pretrain_lr,
        weight_decay=recipe.weight_decay,
        warmup=max(1, recipe.pretrain_steps // 20),
        progress=progress,
        desc="vision base",
    )
    xv, yv = load_pretrain("val")
    info = {"final_loss": sum(losses[-20:]) / len(losses[-20:]), "val_accuracy": _accuracy(net.eval(), xv, yv)}
    return _backbone_state(net), info


def _finetune(
    recipe: VisionRecipe, base: StateDict, task: str, index: int, progress: bool
) -> tuple[StateDict, StateDict, StateDict, dict[str, float]]:
    """(expert backbone, expert head, probe head, accuracies) for one task."""
    torch.manual_seed(recipe.seed * 1000 + index + 1)
    net = VisionNet(num_classes(task), recipe.width, recipe.channels)
    net.backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in base.items()})
    x, y = load_task(task, "train")
    generator = torch.Generator().manual_seed(recipe.seed * 1000 + index + 1)
    xt, yt = load_task(task, "test")
    if recipe.probe_steps:
        # The probe sees frozen features; computing them under no_grad keeps it cheap.
        net.eval()

        def probe_loss(step: int) -> Tensor:
            xb, yb = _batch(x, y, recipe.batch_size, generator)
            with torch.no_grad():
                features = net.features(xb)
            return F.cross_entropy(net.head(features), yb)

        train_loop(
            list(net.head.parameters()),
            probe_loss,
            recipe.probe_steps,
            recipe.probe_lr,
            progress=progress,
            desc=f"probe {task}",
        )
    probe_head = _head_state(net)
    probe_accuracy = _accuracy(net.eval(), xt, yt)

    def finetune_loss(step: int) -> Tensor:
        xb, yb = _batch(x, y, recipe.batch_size, generator)
        return F.cross_entropy(net(xb), yb)

    net.train()
    train_loop(
        list(net.parameters()),
        finetune_loss,
        recipe.finetune_steps,
        recipe.lr,
        warmup=max(1, recipe.finetune_steps // 10),
        progress=progress,
        desc=f"expert {task}",
    )
    net.eval()
    accuracies = {"probe": probe_accuracy, "expert": _accuracy(net, xt, yt)}
    return _backbone_state(net), _head_state(net), probe_head, accuracies


def _build(recipe: VisionRecipe, directory: Path, progress: bool) -> None:
    start, cpu_start = time.perf_counter(), time.process_time()
    base, base_info = _pretrain(recipe, progress)
    save_state(base, directory / "base.safetensors")
    expert_accuracy, probe_accuracy = {}, {}
    for index, task in enumerate(tqdm(recipe.tasks, desc="vision experts", disable=not progress)):
        expert, head, probe_head, accuracies = _finetune(recipe, base, task, index, progress)
        save_state(expert, directory / f"expert-{task}.safetensors")
        save_state(head, directory / f"head-{task}.safetensors")
        save_state(probe_head, directory / f"probe-{task}.safetensors")
        expert_accuracy[task], probe_accuracy[task] = accuracies["expert"], accuracies["probe"]
    meta = {
        "recipe": asdict(recipe),
        "expert_accuracy": expert_accuracy,
        "probe_accuracy": probe_accuracy,
        "base": base_info,
        "build_seconds": time.perf_counter() - start,
        "build_cpu_seconds": time.process_time() - cpu_start,  # wall time on a shared machine overstates it
        "threads": torch.get_num_threads(),
    }
    write_meta(directory, meta)


def _load(recipe: VisionRecipe, directory: Path, meta: dict[str, Any], loaded_from_cache: bool) -> VisionTestbed:
    paths = {"base": directory / "base.safetensors"} | {t: directory / f"expert-{t}.safetensors" for t in recipe.tasks}
    return VisionTestbed(
        recipe=recipe,
        tasks=tuple(recipe.tasks),
        base=load_state(paths["base"]),
        experts={t: load_state(paths[t]) for t in recipe.tasks},
        heads={t: load_state(directory / f"head-{t}.safetensors") for t in recipe.tasks},
        probe_heads={t: load_state(directory / f"probe-{t}.safetensors") for t in recipe.tasks},
        expert_accuracy={t: float(meta["expert_accuracy"][t]) for t in recipe.tasks},
        probe_accuracy={t: float(meta["probe_accuracy"][t]) for t in recipe.tasks},
        paths=paths,
        directory=directory,
        build_seconds=float(meta["build_seconds"]),
        loaded_from_cache=loaded_from_cache,
    )


def vision_testbed(recipe: VisionRecipe | None = None, progress: bool = True) -> VisionTestbed:
    """Load the vision testbed of `recipe` (default `VisionRecipe.full()`) from the cache, building it first if
    needed (under a file lock, so concurrent callers build it once).

    Args:
        recipe: the recipe; its hash names the cache directory.
        progress: show tqdm bars while building.
    """
    recipe = recipe or VisionRecipe.full()
    c1, c2 = recipe.channels
    recipe = replace(recipe, tasks=tuple(recipe.tasks), channels=(c1, c2))  # a recipe given lists hashes like tuples
    directory = testbed_dir("vision", recipe)
    meta = read_meta(directory)
    if meta is not None:
        return _load(recipe, directory, meta, loaded_from_cache=True)
    with build_lock(directory):
        meta = read_meta(directory)  # another process may have finished while we waited
        loaded = meta is not None
        if meta is None:
            # One intra-op thread: the same tensors on every machine, and no spinning OpenMP threads on shared cores.
            # fork_rng: the build seeds torch's global generator; the caller's stream is left as it was.
            with torch_threads(1), torch.random.fork_rng(devices=[]):
                _build(recipe, directory, progress)
            meta = read_meta(directory)
            assert meta is not None
    return _load(recipe, directory, meta, loaded_from_cache=loaded)
