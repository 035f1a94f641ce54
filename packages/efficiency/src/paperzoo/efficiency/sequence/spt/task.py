"""Self-pretraining (SPT) and fine-tuning from it, over the shared `SequenceModel`.

"Never Train from Scratch: Fair Comparison of Long-Sequence Models Requires Data-Driven Priors" (arXiv:2310.02980):
pretrain on the downstream task's own inputs with a denoising objective (`objectives.py`), then fine-tune the same
backbone on the labels.

- `SelfPretrainTask`: `SequenceModel` + a linear LM head over the data's vocabulary. The objective follows the
  backbone's causality (`SequenceModel.causal`): masked-token prediction for bidirectional mixers, next-token
  prediction for causal ones, unless set. The backbone's embedding has one row more than the data's vocabulary:
  id `vocab_size` is the mask token. Labels in the batch are never read. Logs `{stage}/acc`, the accuracy of the
  predicted tokens (masked positions, or next tokens).
- `FinetuneClassificationTask(SequenceClassificationTask)`: the shared classification task with
  `pretrained: str | None`, a pretraining checkpoint whose backbone initialises the model at the start of a fresh
  `fit` (not when resuming the fine-tuning run, and not in `load_from_checkpoint`); the classification head starts
  fresh. `load_pretrained_backbone` does the same on any `SequenceModel`.

Both run through `paperzoo fit`: `spt/pretrain_listops.yaml`, then `spt/finetune_listops.yaml` with
`--model.pretrained <run>/checkpoints/last.ckpt`. The architecture arguments (dim, depth, mixer, mixer_args,
mlp_ratio) must be the same in both; a shape mismatch is a `ConfigError` naming the file and the parameter.

Deviation: the reference code fine-tunes with the pretraining checkpoint's decoder swapped for a new one, as here;
its learning-rate and weight-decay settings per layer (S4's smaller LR for A, B, dt) are not reproduced.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.efficiency.sequence.backbone import SequenceModel
from paperzoo.efficiency.sequence.spt.objectives import (
    DEFAULT_MASK_RATE,
    OBJECTIVES,
    Objective,
    causal_targets,
    content_seed,
    denoising_loss,
    mask_tokens,
)
from paperzoo.efficiency.sequence.task import IGNORE_INDEX, SequenceClassificationTask


class SelfPretrainTask(BaseTask):
    """Self-pretraining of a `SequenceModel` on the task's input sequences.

    Args:
        vocab_size: the data's token ids (linked from the datamodule; 0 is padding); the backbone gets one more, the
            mask token `vocab_size`.
        dim, depth, mixer, mixer_args, mlp_ratio, dropout: the `SequenceModel` (the same as the fine-tuning run's).
        objective: "auto" (masked for a bidirectional backbone, causal for a causal one), "masked" or "causal".
        mask_rate: probability that a real token is masked (masked objective).
        eval_seed: base seed of the validation/test masks, which are fixed per batch.
        optimizer, lr_scheduler: see `BaseTask`.

    Shapes: batch {"tokens": [B, L] int64, ...} (other fields ignored; pairs [B, 2, L] are pretrained as 2B
    sequences) -> logits [B, L, vocab_size].
    """

    throughput_unit = "tokens"

    def __init__(
        self,
        vocab_size: int = 256,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "attention",
        mixer_args: dict[str, Any] | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        objective: Literal["auto", "masked", "causal"] = "auto",
        mask_rate: float = DEFAULT_MASK_RATE,
        eval_seed: int = 0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        require(objective in ("auto", *OBJECTIVES), f"objective must be auto, masked or causal, got {objective!r}")
        require(0.0 < mask_rate < 1.0, f"mask_rate must be in (0, 1), got {mask_rate}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.model = SequenceModel(vocab_size + 1, dim, depth, mixer, mixer_args, mlp_ratio, dropout)
        self.lm_head = nn.Linear(dim, vocab_size)
        self.mask_token = vocab_size
        resolved: Objective = objective if objective != "auto" else ("causal" if self.model.causal else "masked")
        require(
            resolved == "masked" or self.model.causal,
            f"the causal objective needs a causal backbone, but mixer {mixer!r} with {mixer_args or {}} sees the "
            "future (next-token prediction would be trivial); use objective masked or a causal mixer",
        )
        self.objective: Objective = resolved
        self.mask_rate, self.eval_seed = mask_rate, eval_seed

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] (the mask token allowed) -> LM logits [B, L, vocab_size]."""
        return self.lm_head(self.model(tokens))

    def corrupt(self, tokens: torch.Tensor, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's (inputs, targets) for tokens [B, L]; random masks in training, fixed per batch else."""
        if self.objective == "causal":
            return tokens, causal_targets(tokens)
        generator = None
        if stage != "train":
            generator = torch.Generator().manual_seed(content_seed(tokens, self.eval_seed))
        inputs, targets, _ = mask_tokens(tokens, self.mask_token, self.mask_rate, generator)
        return inputs, targets

    def step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        tokens = batch["tokens"]
        tokens = tokens.flatten(0, -2) if tokens.dim() > 2 else tokens  # pairs: each side is a sequence
        inputs, targets = self.corrupt(tokens, stage)
        logits = self(inputs)  # [B, L, V]
        loss = denoising_loss(logits, targets)
        scored = targets != IGNORE_INDEX
        if bool(scored.any()):
            accuracy = (logits.detach().argmax(-1)[scored] == targets[scored]).float().mean()
            self.log(f"{stage}/acc", accuracy, prog_bar=stage != "train", sync_dist=stage != "train")
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Predicted token per position on the objective's inputs (the validation masks). [B, L] int64"""
        inputs, _ = self.corrupt(batch["tokens"], "predict")
        return self(inputs).argmax(-1)

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["tokens"].numel())


# --- fine-tuning -----------------------------------------------------------------------------------------------------
def read_backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `SequenceModel` weights in a checkpoint: a Lightning checkpoint of any sequence task (its `model.*`
    parameters) or a `SequenceModel` state dict saved with `torch.save`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained checkpoint {str(path)!r} does not exist; expected a SelfPretrainTask checkpoint")
    try:
        # our own checkpoints hold hyperparameters (callables), so a full unpickle is needed: load only trusted files
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"pretrained checkpoint {str(path)!r} is not a readable torch checkpoint: {error}") from error
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"pretrained checkpoint {str(path)!r} holds no state dict")
    if any(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    return state


def load_pretrained_backbone(
    model: SequenceModel,
    source: str | Path | SequenceModel | BaseTask | Mapping[str, torch.Tensor],
) -> None:
    """Copy a pretrained backbone into `model` (every parameter and buffer of the `SequenceModel`).

    `source` is a checkpoint path (see `read_backbone_state`), a `SelfPretrainTask` or other task with a `.model`,
    a `SequenceModel`, or its state dict. The pretraining embedding's extra last row (the mask token) is dropped
    when `model` has exactly one row fewer. Anything else that does not fit (a missing, unexpected or differently
    shaped parameter: another dim, depth, mixer or vocabulary) raises a `ConfigError` naming the source and the
    parameter.
    """
    name = str(source) if isinstance(source, (str, Path)) else type(source).__name__
    if isinstance(source, (str, Path)):
        state = read_backbone_state(source)
    elif isinstance(source, SequenceModel):
        state = source.state_dict()
    elif isinstance(source, nn.Module):
        backbone = getattr(source, "model", None)
        require(isinstance(backbone, SequenceModel), f"{name} has no SequenceModel `.model` to load a backbone from")
        state = backbone.state_dict()
    else:
        state = dict(source)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"pretrained backbone {name!r} does not fit this model: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}; expected the same depth, mixer and mixer_args as the pretraining run"
        )
    transfer = {}
    for key, value in state.items():
        expected = own[key].shape
        if key == "embedding.weight" and value.shape[0] == expected[0] + 1 and value.shape[1:] == expected[1:]:
            value = value[: expected[0]]  # the mask token's row has no use in fine-tuning
        if value.shape != expected:
            raise ConfigError(
                f"pretrained backbone {name!r}: parameter {key!r} has shape {tuple(value.shape)}, this model expects "
                f"{tuple(expected)}; use the pretraining run's dim, mixer_args and vocabulary"
            )
        transfer[key] = value
    model.load_state_dict(transfer)


class FinetuneClassificationTask(SequenceClassificationTask):
    """`SequenceClassificationTask` initialised from a self-pretrained backbone (`pretrained`), head fresh.

    Args:
        pretrained: a `SelfPretrainTask` checkpoint (or a saved `SequenceModel` state dict); None trains from
            scratch, exactly like `SequenceClassificationTask`.
        the rest: see `SequenceClassificationTask`.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        num_classes: int = 2,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "attention",
        mixer_args: dict[str, Any] | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pooling: str = "mean",
        paired: bool = False,
        pretrained: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(
            vocab_size,
            num_classes,
            dim,
            depth,
            mixer,
            mixer_args,
            mlp_ratio,
            dropout,
            pooling,
            paired,
            optimizer,
            lr_scheduler,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        # read at the start of a fresh fit (setup), not here: a fine-tuned checkpoint reloads without the file
        self.pretrained = pretrained

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, **kwargs: Any) -> "FinetuneClassificationTask":
        """A fine-tuning task with the backbone of `checkpoint` loaded now; `kwargs` are the constructor's."""
        task = cls(**kwargs)
        load_pretrained_backbone(task.model, checkpoint)
        return task

    def setup(self, stage: str) -> None:
        # fresh fits only: a resumed fine-tuning run restores its own, already fine-tuned weights
        resuming = getattr(self._trainer, "ckpt_path", None) is not None
        if stage == "fit" and self.pretrained and not resuming:
            load_pretrained_backbone(self.model, self.pretrained)
