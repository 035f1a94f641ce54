"""Nothing is lost when a run is killed; checkpoints are atomic; DDP on CPU follows the 1-process run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paperzoo.core.cli import main
from paperzoo.core.errors import DataError
from paperzoo.core.io import atomic_open, load_checkpoint_file

PAPERZOO = [sys.executable, "-m", "paperzoo.core.cli"]


def tiny_args(corpus: Path, checkpoints: Path, *extra: str) -> list[str]:
    """wsd/tiny on a 12-document corpus: ~6 batches an epoch, so 21 steps span 4 epochs."""
    return [
        "fit",
        "--config",
        "wsd/tiny",
        "--config",
        "cpu",
        f"--data.init_args.path={corpus}",
        "--trainer.max_steps=21",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--checkpoint.dirpath={checkpoints}",
        "--checkpoint.every_n_train_steps=3",
        *extra,
    ]


def final_weights(checkpoints: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint_file(checkpoints / "last.ckpt")
    assert state["global_step"] == 21
    return state["state_dict"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def cli_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*PAPERZOO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_resume_after_sigkill_matches_uninterrupted_run(small_corpus, tmp_path):
    main(tiny_args(small_corpus, tmp_path / "whole"))
    crashed = cli_process(
        tiny_args(
            small_corpus,
            tmp_path / "crash",
            "--trainer.callbacks+=paperzoo.core.testing.callbacks.KillAtStep",
            "--trainer.callbacks.step=14",  # epoch 2, after the checkpoint of step 12
        ),
        tmp_path,
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert (tmp_path / "crash" / "last.ckpt").is_file()
    resumed = cli_process(tiny_args(small_corpus, tmp_path / "crash", "--ckpt_path=last"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert max_difference(final_weights(tmp_path / "whole"), final_weights(tmp_path / "crash")) == 0.0


def test_ddp_two_processes_follow_one_process(small_corpus, tmp_path):
    """2 ranks x batch 4 (gloo) against 1 process x batch 8: the same global batches, so the same weights up to
    float summation order. Tolerance: 1e-4 absolute on every weight after 21 AdamW steps."""
    main(tiny_args(small_corpus, tmp_path / "one"))
    ddp = cli_process(
        tiny_args(
            small_corpus,
            tmp_path / "two",
            "--config",
            "ddp",
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--data.init_args.batch_size=4",
        ),
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert max_difference(final_weights(tmp_path / "one"), final_weights(tmp_path / "two")) < 1e-4


def test_atomic_open_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_writes_go_through_a_temporary_file(small_corpus, tmp_path, monkeypatch):
    renames: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((str(a), str(b))), real_replace(a, b))[1])
    main(tiny_args(small_corpus, tmp_path / "ckpt", "--trainer.max_steps=3"))
    assert any(dst.endswith("last.ckpt") and Path(src).name.startswith(".last.ckpt.") for src, dst in renames)
    assert not list((tmp_path / "ckpt").glob(".*.tmp"))


def test_truncated_checkpoint_names_the_file(small_corpus, tmp_path, capsys):
    main(tiny_args(small_corpus, tmp_path / "ckpt", "--trainer.max_steps=3"))
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:2000])
    with pytest.raises(DataError, match=f"checkpoint {truncated} is truncated or corrupt"):
        load_checkpoint_file(truncated)
    with pytest.raises(SystemExit) as exit_:
        main(tiny_args(small_corpus, tmp_path / "again", f"--ckpt_path={truncated}"))
    assert exit_.value.code == 2
    assert f"paperzoo: error: checkpoint {truncated} is truncated or corrupt" in capsys.readouterr().err


def test_decay_branch_from_a_stable_checkpoint_through_the_cli(small_corpus, tmp_path):
    """A stable run (decay_steps 0) checkpointed at step 8, then a 4-step linear decay branched from that checkpoint:
    the branch continues the step count and data position and ends at the minimum LR."""
    scheduler = "--model.init_args.lr_scheduler.init_args"
    stable = tmp_path / "stable"
    main(
        tiny_args(
            small_corpus,
            stable,
            "--trainer.max_steps=12",
            "--checkpoint.every_n_train_steps=4",
            "--checkpoint.save_top_k=-1",
            f"{scheduler}.decay_steps=0",
        )
    )
    start = next(stable.glob("*step=8.ckpt"))
    branch = tmp_path / "branch"
    main(
        tiny_args(
            small_corpus,
            branch,
            "--trainer.max_steps=12",
            f"--ckpt_path={start}",
            f"{scheduler}.decay_steps=4",
            f"{scheduler}.decay_shape=linear",
            f"{scheduler}.min_lr_ratio=0.1",
        )
    )
    stable_end, branch_end = (load_checkpoint_file(folder / "last.ckpt") for folder in (stable, branch))
    peak = stable_end["lr_schedulers"][0]["base_lrs"][0]
    assert stable_end["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(peak)
    assert branch_end["global_step"] == 12 and branch_end["lr_schedulers"][0]["last_epoch"] == 12
    assert branch_end["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.1 * peak)
    # the two runs share everything up to step 8, then differ only through the LR
    assert max_difference(stable_end["state_dict"], branch_end["state_dict"]) > 0


def test_base_class_load_rebuilds_the_trained_task_in_a_fresh_process(small_corpus, tmp_path):
    main(tiny_args(small_corpus, tmp_path / "ckpt", "--trainer.max_steps=2"))
    code = (
        "import sys; from paperzoo.core.task import BaseTask; "
        "task = BaseTask.load_from_checkpoint(sys.argv[1]); print(type(task).__name__, task.hparams.vocab_size)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ckpt" / "last.ckpt")], capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split() == ["CausalLMTask", "257"]
