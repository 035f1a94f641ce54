"""Train a recognition task for a fixed budget and measure it: the shared loop of the speech claim checks, so
Paraformer, the autoregressive and the CTC baselines are trained and scored the same way.

- `train_recognizer`: core's `check_trainer` (one device; no logger, checkpoints, progress bar or validation), a
  fixed number of optimizer steps, everything seeded: the code path of `paperzoo fit`.
- `evaluate_recognizer`: decodes a dataloader (or utterances through a datamodule's features) and reports corpus
  CER and WER (torchmetrics, on the vocabulary's text) and the decoding real-time factor
  RTF = decode wall time / audio duration, once one utterance at a time (batch 1, padding cut off) and once in the
  loader's batches. The timed part is `model.decode` (encoder + search) on features already computed: feature
  extraction is the same for every recognizer and is left out. Timing runs on the torch threads the caller set
  (`paperzoo.core.checks.torch_threads`); one untimed warm-up decode precedes each measurement.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics.text import CharErrorRate, WordErrorRate

from paperzoo.core.checks import check_trainer
from paperzoo.core.errors import require
from paperzoo.speech.asr.recognizer import unpad_tokens
from paperzoo.speech.asr.task import RecognitionTask
from paperzoo.speech.data.tokenizer import UNK_ID, ids_to_text
from paperzoo.speech.data.utterance import Utterance


@dataclass
class TrainingFigures:
    """What one budgeted training run measured.

    Attributes:
        steps: optimizer steps taken.
        seconds: wall time of the fit (data loading included).
        steps_per_s: steps / seconds.
        final_loss: mean training loss of the last `window` steps.
        losses: (step, training loss) of every step.
        parameters: trainable parameters.
    """

    steps: int
    seconds: float
    steps_per_s: float
    final_loss: float
    losses: list[tuple[float, float]] = field(default_factory=list)
    parameters: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[float, float]] = []
        self.started = 0.0
        self.seconds = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append((float(trainer.global_step), float(loss)))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.started


def train_recognizer(
    task: RecognitionTask,
    datamodule: L.LightningDataModule,
    max_steps: int,
    seed: int = 0,
    accelerator: str = "cpu",
    gradient_clip_val: float | None = None,
    window: int = 20,
) -> TrainingFigures:
    """Fit `task` for `max_steps` optimizer steps on `datamodule`'s training split.

    Seeds everything with `seed` first (data order, SpecAugment, dropout). For equal initial weights across tasks,
    build each task right after `L.seed_everything(seed)`. The task's own optimizer and scheduler apply.
    """
    require(max_steps >= 1, f"max_steps must be >= 1, got {max_steps}")
    L.seed_everything(seed, verbose=False)
    recorder = _LossRecorder()
    trainer = check_trainer(
        max_steps=max_steps,
        accelerator=accelerator,
        limit_val_batches=0,
        gradient_clip_val=gradient_clip_val,
        callbacks=[recorder],
    )
    trainer.fit(task, datamodule=datamodule)
    tail = [loss for _, loss in recorder.losses[-window:]]
    return TrainingFigures(
        steps=trainer.global_step,
        seconds=recorder.seconds,
        steps_per_s=trainer.global_step / recorder.seconds if recorder.seconds > 0 else 0.0,
        final_loss=sum(tail) / len(tail) if tail else float("nan"),
        losses=recorder.losses,
        parameters=sum(p.numel() for p in task.parameters() if p.requires_grad),
    )


def _single_utterances(batches: Sequence[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every utterance of `batches` as its own batch of one, padding cut off: ([1, T_i, F], [1])."""
    singles = []
    for batch in batches:
        for features, length in zip(batch["features"], batch["feature_lengths"], strict=True):
            singles.append((features[None, : int(length)], length.view(1)))
    return singles


def _timed_decode(task: RecognitionTask, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list, float]:
    """The decoded ids of each input batch (flattened) and the wall time of decoding them all."""
    task.model.decode(*inputs[0])  # warm-up (allocator, kernels), untimed
    hypotheses: list[list[int]] = []
    started = time.perf_counter()
    for features, lengths in inputs:
        hypotheses.extend(task.model.decode(features, lengths))
    return hypotheses, time.perf_counter() - started


def _error_rates(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    return {
        "cer": float(CharErrorRate()(hypotheses, references)),
        "wer": float(WordErrorRate()(hypotheses, references)),
    }


def evaluate_recognizer(
    task: RecognitionTask,
    data: Iterable[dict[str, torch.Tensor]] | Sequence[Utterance],
    datamodule: Any = None,
    batch_size: int | None = None,
    batch_one: bool = True,
    batched: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """CER, WER and decoding speed of `task` on `data`.

    Args:
        task: a trained recognition task (its `model.decode` is what is measured: set `model.beam_size` first for the
            autoregressive baseline).
        data: a dataloader (or any iterable) of batches in the batch contract, or a list of `Utterance`s (then
            `datamodule`, after `setup()`, turns them into features with its CMVN and tokenizer).
        datamodule: a `SpeechDataModule`, needed for utterances.
        batch_size: the batch size for utterances (default: the datamodule's).
        batch_one, batched: which of the two timings to run (at least one).
        device: where to decode.

    Returns:
        utterances, audio_seconds, tokens (reference tokens), unknown_tokens (reference tokens that are <unk>, whose
        characters the references lack: the vocabulary does not cover them), threads (torch intra-op threads), and
        for each timing `<mode>_cer`, `<mode>_wer`, `<mode>_decode_seconds`, `<mode>_rtf` with mode = batch1 |
        batched, plus `cer`, `wer`, `rtf` of batch 1 when it ran (else of batched).
    """
    require(batch_one or batched, "evaluate_recognizer needs batch_one or batched (or both)")
    if isinstance(data, Sequence) and data and isinstance(data[0], Utterance):
        require(datamodule is not None, "evaluating utterances needs the datamodule that featurizes them")
        data = datamodule.loader(data, batch_size=batch_size)
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in data]  # type: ignore[union-attr]
    require(len(batches) > 0, "evaluate_recognizer got no batches to decode")
    targets = [ids for batch in batches for ids in unpad_tokens(batch["tokens"], batch["token_lengths"])]
    references = [ids_to_text(task.vocabulary, ids) for ids in targets]
    audio_seconds = float(sum(float(batch["audio_seconds"].sum()) for batch in batches))
    figures: dict[str, float] = {
        "utterances": float(len(references)),
        "audio_seconds": audio_seconds,
        "tokens": float(sum(len(ids) for ids in targets)),
        "unknown_tokens": float(sum(ids.count(UNK_ID) for ids in targets)),
        "threads": float(torch.get_num_threads()),
    }
    modes = {}
    if batch_one:
        modes["batch1"] = _single_utterances(batches)
    if batched:
        modes["batched"] = [(batch["features"], batch["feature_lengths"]) for batch in batches]
    was_training = task.training
    task.to(device).eval()
    try:
        with torch.no_grad():
            for mode, inputs in modes.items():
                hypotheses, seconds = _timed_decode(task, inputs)
                texts = [ids_to_text(task.vocabulary, ids) for ids in hypotheses]
                for name, value in _error_rates(texts, references).items():
                    figures[f"{mode}_{name}"] = value
                figures[f"{mode}_decode_seconds"] = seconds
                figures[f"{mode}_rtf"] = seconds / audio_seconds if audio_seconds > 0 else float("nan")
    finally:
        task.train(was_training)
    main = "batch1" if batch_one else "batched"
    figures.update(cer=figures[f"{main}_cer"], wer=figures[f"{main}_wer"], rtf=figures[f"{main}_rtf"])
    return figures
