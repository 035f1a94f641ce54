"""`RecognitionTask`: the LightningModule shared by every recognizer. A subclass builds `self.model` (a
`SpeechRecognizer`) from its architecture arguments; training minimises the model's "loss", and validation and
test decode and score character and word error rates (torchmetrics) on the text of the vocabulary."""

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.text import CharErrorRate, WordErrorRate

from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.core.task import BaseTask
from paperzoo.speech.asr.recognizer import SpeechRecognizer, unpad_tokens
from paperzoo.speech.data.tokenizer import ids_to_text


class RecognitionTask(BaseTask):
    """Trains a `SpeechRecognizer` and reports `<stage>/cer` and `<stage>/wer`.

    Args:
        vocabulary: the token pieces by id (linked from the datamodule).
        optimizer, lr_scheduler: see `BaseTask`.
    """

    METRICS = {"cer": CharErrorRate, "wer": WordErrorRate}
    model: SpeechRecognizer
    throughput_unit = "utterances"

    def __init__(
        self,
        vocabulary: list[str],
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(optimizer, lr_scheduler)
        self.vocabulary = list(vocabulary)
        self.error_rates = torch.nn.ModuleDict(
            {f"{stage}_{name}": metric() for stage in ("val", "test") for name, metric in self.METRICS.items()}
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[str]:
        """The recognised text of each utterance in a batch (features [B, T, F], lengths [B])."""
        return [ids_to_text(self.vocabulary, ids) for ids in self.model.decode(features, feature_lengths)]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        return self(batch["features"], batch["feature_lengths"])

    def step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        features, feature_lengths = batch["features"], batch["feature_lengths"]
        losses = self.model(features, feature_lengths, batch["tokens"], batch["token_lengths"])
        batch_size = features.shape[0]
        for name, value in losses.items():
            if name != "loss":
                self.log(f"{stage}/{name}", value, batch_size=batch_size)
        if stage in ("val", "test"):
            hypotheses = self(features, feature_lengths)
            references = [
                ids_to_text(self.vocabulary, ids) for ids in unpad_tokens(batch["tokens"], batch["token_lengths"])
            ]
            for name in self.METRICS:
                metric = self.error_rates[f"{stage}_{name}"]
                metric.update(hypotheses, references)
                self.log(f"{stage}/{name}", metric, batch_size=batch_size, prog_bar=name == "cer")
        return losses["loss"]
