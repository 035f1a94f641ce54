"""Small models trained from different initialisations for the alignment claim checks (weight matching, PLeaS).

Unlike the task-arithmetic experts of the testbed (all fine-tuned from one base), alignment methods merge models
that share nothing but the architecture: each seed here draws its own initialisation and its own batch order. Data
come from the merging testbed's loaders (`load_task`), optionally restricted to a subset of classes (renumbered
0..k-1), e.g. digits 0-4 and 5-9 for two disjoint label spaces. Trained weights are cached as safetensors under
`cache_dir("merging", "alignment", <recipe hash>)`, written atomically, so a check's second run loads them.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load, save
from torch import Tensor, nn

from paperzoo.core.errors import require
from paperzoo.core.io import atomic_open, cache_dir
from paperzoo.efficiency.merging.alignment.permutation import MLP, ConvNet
from paperzoo.efficiency.merging.task_vector import StateDict

__all__ = ["TrainRecipe", "build_model", "evaluate", "load_model", "task_data", "train_model"]

VERSION = 1  # bump when training changes, so cached weights are rebuilt


@dataclass(frozen=True)
class TrainRecipe:
    """How to train one small classifier.

    Args:
        task: a testbed vision task (`paperzoo.efficiency.merging.testbed.VISION_TASKS`).
        classes: keep only these labels of the task, renumbered 0..k-1 in this order (None: all).
        arch: "mlp" (`MLP` over `widths`) or "cnn" (`ConvNet` with `channels`, then `widths`).
        widths: hidden widths of the linear layers.
        channels: conv channels (cnn only).
        epochs, batch_size, lr, weight_decay: Adam training on the train split, cosine learning-rate decay.
    """

    task: str
    classes: tuple[int, ...] | None = None
    arch: Literal["mlp", "cnn"] = "mlp"
    widths: tuple[int, ...] = (256, 256, 256)
    channels: tuple[int, ...] = (16, 32)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0

    def digest(self) -> str:
        text = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def task_data(task: str, split: str, classes: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """x [N, 1, 28, 28], y [N] of a testbed task's split, restricted to `classes` (renumbered in that order)."""
    from paperzoo.efficiency.merging.testbed import load_task

    x, y = load_task(task, split)  # type: ignore[arg-type]
    if classes is None:
        return x, y
    remap = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
    for new, old in enumerate(classes):
        require(0 <= old < len(remap), f"class {old} is not a label of task {task!r}")
        remap[old] = new
    keep = remap[y] >= 0
    return x[keep], remap[y[keep]]


def build_model(recipe: TrainRecipe, num_classes: int) -> nn.Module:
    if recipe.arch == "mlp":
        return MLP(28 * 28, recipe.widths, num_classes)
    require(recipe.arch == "cnn", f"arch {recipe.arch!r} must be 'mlp' or 'cnn'")
    return ConvNet(recipe.channels, recipe.widths, num_classes)


def _num_classes(recipe: TrainRecipe) -> int:
    from paperzoo.efficiency.merging.testbed import num_classes

    return len(recipe.classes) if recipe.classes is not None else num_classes(recipe.task)


def load_model(recipe: TrainRecipe, state: StateDict) -> nn.Module:
    model = build_model(recipe, _num_classes(recipe))
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y)."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    return loss / len(x), correct / len(x)


def train_model(recipe: TrainRecipe, seed: int) -> StateDict:
    """The weights of `recipe` trained from the initialisation and batch order of `seed` (cached)."""
    path = cache_dir("merging", "alignment", recipe.digest()) / f"seed{seed}.safetensors"
    if path.is_file():
        return load(path.read_bytes())
    x, y = task_data(recipe.task, "train", recipe.classes)
    torch.manual_seed(seed)
    model = build_model(recipe, _num_classes(recipe))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = (len(x) + recipe.batch_size - 1) // recipe.batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_open(path, "wb") as handle:
        handle.write(save(state))
    return state
