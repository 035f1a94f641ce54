"""The conformance suite every method card passes (run for all installed cards by the workspace tests).

- forward and backward give finite values;
- the loss drops when a fixed batch is fitted;
- `tiny.yaml` fits through the `paperzoo` command for a few steps;
- a checkpoint round-trip through the command reproduces the validation outputs, and `BaseTask.load_from_checkpoint`
  rebuilds the same task (linked hyperparameters included);
- non-training methods leave their inputs untouched (`check_no_mutation`).
"""

import copy
import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from paperzoo.core.card import MethodCard
from paperzoo.core.cli import main as paperzoo_main
from paperzoo.core.cli import preset_path
from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.task import BaseTask


def _cli(config: Path, *overrides: str) -> Any:
    from paperzoo.core.card import import_all_methods
    from paperzoo.core.lightning_cli import PaperzooCLI

    import_all_methods()
    return PaperzooCLI(run=False, args=["--config", str(config), *overrides])


def build_from_config(config: Path, *overrides: str) -> tuple[BaseTask, BaseDataModule]:
    """The task and datamodule a config describes, built by the CLI's own parser (links applied)."""
    cli = _cli(config, *overrides)
    return cli.model, cli.datamodule


def first_train_batch(data: BaseDataModule) -> Any:
    data.prepare_data()
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def check_forward_backward(task: BaseTask, batch: Any) -> None:
    task.train()
    loss = task.step(batch, "train")
    assert torch.isfinite(loss), f"loss is {loss}"
    loss.backward()
    for name, param in task.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), f"gradient of {name} is not finite"
    task.zero_grad()


def check_loss_drops(task: BaseTask, batch: Any, steps: int = 20, lr: float = 3e-3) -> None:
    """Fitting one batch must lower its loss: the basic sign that gradients reach the parameters."""
    task.train()
    optimizer = torch.optim.Adam(task.parameters(), lr=lr)
    with torch.no_grad():
        before = float(task.step(batch, "train"))
    for _ in range(steps):
        optimizer.zero_grad()
        task.step(batch, "train").backward()
        optimizer.step()
    with torch.no_grad():
        after = float(task.step(batch, "train"))
    assert after < before, f"loss did not drop on a fixed batch: {before:.4f} -> {after:.4f}"


def read_metric(log_dir: Path, name: str) -> float:
    """The last value of `name` in a CSVLogger's metrics.csv under `log_dir`."""
    value = None
    for metrics in sorted(log_dir.rglob("metrics.csv")):
        with metrics.open() as handle:
            for row in csv.DictReader(handle):
                if row.get(name):
                    value = float(row[name])
    assert value is not None, f"no {name} logged under {log_dir}"
    return value


def fit_tiny_and_round_trip(card: MethodCard, workdir: Path, steps: int = 4) -> None:
    """`paperzoo fit` the card's tiny config, then `paperzoo validate` its checkpoint and `load_from_checkpoint`:
    all three must agree on the validation loss."""
    tiny = card.config("tiny")
    common = [
        "--config",
        str(tiny),
        "--config",
        "cpu",
        "--trainer.logger=CSVLogger",
        f"--trainer.logger.save_dir={workdir}",
        "--trainer.enable_progress_bar=false",
    ]
    fit_logs, validate_logs = workdir / "fit", workdir / "validate"
    paperzoo_main(
        [
            "fit",
            *common,
            f"--trainer.logger.name={fit_logs.name}",
            f"--trainer.max_steps={steps}",
            f"--trainer.val_check_interval={steps}",
            "--trainer.check_val_every_n_epoch=null",
            f"--checkpoint.dirpath={workdir / 'ckpt'}",
        ]
    )
    checkpoint = workdir / "ckpt" / "last.ckpt"
    assert checkpoint.is_file(), f"fit wrote no {checkpoint}"
    fitted = read_metric(fit_logs, "val/loss")
    paperzoo_main(["validate", *common, f"--trainer.logger.name={validate_logs.name}", f"--ckpt_path={checkpoint}"])
    validated = read_metric(validate_logs, "val/loss")
    assert abs(fitted - validated) < 1e-5, f"val/loss after fit {fitted} != after reload {validated}"
    for verb in ("test", "predict"):  # the other verbs run on the checkpoint too
        paperzoo_main(
            [
                verb,
                *common,
                f"--trainer.logger.name={verb}",
                "--trainer.limit_predict_batches=2",
                "--trainer.limit_test_batches=4",
                f"--ckpt_path={checkpoint}",
            ]
        )

    task = BaseTask.load_from_checkpoint(checkpoint, map_location="cpu")
    assert type(task).__name__ == type(build_from_config(tiny)[0]).__name__
    cli = _cli(
        tiny, "--config", str(preset_path("cpu")), "--trainer.logger=false", "--trainer.enable_progress_bar=false"
    )
    reloaded = cli.trainer.validate(task, datamodule=cli.datamodule, verbose=False)[0]["val/loss"]
    assert abs(reloaded - validated) < 1e-5, f"load_from_checkpoint gives val/loss {reloaded}, the CLI {validated}"


def _snapshot(value: Any) -> Any:
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value.state_dict())
    return copy.deepcopy(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_no_mutation(function: Callable[..., Any], **inputs: Any) -> Any:
    """Call `function(**inputs)` and assert that no input (tensors, state dicts, modules) changed."""
    before = {name: _snapshot(value) for name, value in inputs.items()}
    output = function(**inputs)
    for name, value in inputs.items():
        assert _equal(before[name], _snapshot(value)), f"{getattr(function, '__name__', function)} mutated {name!r}"
    return output
