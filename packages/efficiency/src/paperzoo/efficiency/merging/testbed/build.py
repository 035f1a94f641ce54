"""Cache machinery shared by the vision and text testbeds: recipe hashes, a build lock, atomic safetensors files.

A testbed lives in `cache_dir("merging", "testbed", f"{kind}-{hash}")`, where the hash covers the recipe and
`VERSION` (bumped whenever the training code changes what a recipe produces). Every tensor file is written to a
temporary sibling and renamed; `meta.json` is written last, so a directory without it is an unfinished build and
is rebuilt. An exclusive `fcntl` lock on `.lock` in that directory keeps two processes from building the same
testbed at once: the second waits, then finds `meta.json` and loads.
"""

import contextlib
import fcntl
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn
from tqdm.auto import tqdm

from paperzoo.core.errors import DataError
from paperzoo.core.io import atomic_open, atomic_write_text, cache_dir

StateDict = dict[str, Tensor]
VERSION = 1  # bump when a change of the training code changes what a recipe builds
META = "meta.json"


def recipe_hash(kind: str, recipe: Any) -> str:
    """16 hex digits of the SHA-256 of the recipe's fields, its kind and `VERSION`."""
    payload = json.dumps({"kind": kind, "version": VERSION, "recipe": asdict(recipe)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def testbed_dir(kind: str, recipe: Any) -> Path:
    """Where the testbed of `recipe` is cached (created if missing)."""
    return cache_dir("merging", "testbed", f"{kind}-{recipe_hash(kind, recipe)}")


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive `fcntl` lock on `directory/.lock` for the block (blocks while another process holds it)."""
    with open(directory / ".lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def save_state(state: Mapping[str, Tensor], path: Path) -> None:
    """Write a state dict as a safetensors file, atomically; tied tensors are stored once per key (cloned)."""
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}
    with atomic_open(path, "wb") as handle:
        handle.write(save(tensors))


def load_state(path: Path) -> StateDict:
    """Read a safetensors file; a missing or corrupt file is a `DataError` naming it."""
    if not path.is_file():
        raise DataError(f"testbed file {path} does not exist; delete its directory to rebuild the testbed")
    try:
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"testbed file {path} is truncated or corrupt ({err}); delete it to rebuild") from err


def read_meta(directory: Path) -> dict[str, Any] | None:
    """The finished build's metadata, or None when the directory holds no finished build."""
    path = directory / META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"testbed metadata {path} is corrupt ({err.msg}); delete it to rebuild") from err


def write_meta(directory: Path, meta: Mapping[str, Any]) -> None:
    atomic_write_text(directory / META, json.dumps(meta, indent=1, sort_keys=True))


def cosine_schedule(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor: linear warmup over `warmup` steps, then cosine decay to 10% at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_loop(
    parameters: list[nn.Parameter],
    loss_fn: Callable[[int], Tensor],
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    warmup: int = 0,
    progress: bool = False,
    desc: str = "",
) -> list[float]:
    """AdamW on `parameters` for `steps` steps of `loss_fn(step)`, cosine schedule; returns the loss per step."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_schedule(step, steps, warmup)
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses
