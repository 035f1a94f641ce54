"""The claim-check harness: a fixed, seeded training budget through Lightning; CER/WER by hand; the real-time factor
from one-by-one (unpadded) and batched decoding; utterances featurized by the datamodule. The baselines' configs:
the tiny ones build and train, the espeak ones are the Paraformer check's setting."""

from importlib.resources import files
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from paperzoo.core.checks import torch_threads
from paperzoo.core.testing.conformance import (
    build_from_config,
    check_forward_backward,
    check_loss_drops,
    first_train_batch,
    fit_tiny_and_round_trip,
)
from paperzoo.speech.asr.baselines import AttentionTask, CTCTask
from paperzoo.speech.asr.harness import evaluate_recognizer, train_recognizer
from paperzoo.speech.asr.recognizer import SpeechRecognizer
from paperzoo.speech.asr.task import RecognitionTask
from paperzoo.speech.data.datamodule import SpeechDataModule
from paperzoo.speech.data.tokenizer import IGNORE_ID, SPECIALS, UNK_ID

VOCABULARY = [*SPECIALS, "▁", "a", "b", "c"]  # ids 3 = word boundary, 4..6 = a, b, c
SIZES = {"d_model": 16, "num_heads": 2, "encoder_layers": 1, "ffn_dim": 32, "dropout": 0.0, "encoder_kernel_size": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: a second spinning OpenMP thread made these steps 20x slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def datamodule():
    data = SpeechDataModule(
        vocabulary_size=0,
        extra_words=["one", "two", "three", "red", "green", "blue"],
        train_utterances=16,
        dev_utterances=4,
        test_utterances=6,
        min_words=1,
        max_words=2,
        voices=["en-us", "en-gb"],
        snr_db=None,
        num_mel_bins=40,
        spec_augment=False,
        batch_size=4,
    )
    data.prepare_data()
    data.setup("fit")
    return data


class RecordingRecognizer(SpeechRecognizer):
    """Decodes fixed ids per utterance and records the shapes it was given."""

    def __init__(self, outputs: dict[int, list[int]]):
        super().__init__()
        self.outputs = outputs  # number of valid frames -> ids
        self.calls: list[tuple[tuple[int, ...], list[int]]] = []
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, features, feature_lengths, tokens, token_lengths):
        return {"loss": self.weight * features.mean()}

    def decode(self, features, feature_lengths):
        self.calls.append((tuple(features.shape), feature_lengths.tolist()))
        return [self.outputs[int(n)] for n in feature_lengths]


class RecordingTask(RecognitionTask):
    def __init__(self, outputs):
        super().__init__(VOCABULARY)
        self.model = RecordingRecognizer(outputs)


def test_evaluate_recognizer_error_rates_and_real_time_factor():
    batches = [
        {
            "features": torch.randn(2, 5, 3),
            "feature_lengths": torch.tensor([5, 3]),
            "tokens": torch.tensor([[4, 5, 3, 6], [4, 4, IGNORE_ID, IGNORE_ID]]),  # "ab c", "aa"
            "token_lengths": torch.tensor([4, 2]),
            "audio_seconds": torch.tensor([1.0, 0.5]),
        },
        {
            "features": torch.randn(1, 4, 3),
            "feature_lengths": torch.tensor([4]),
            "tokens": torch.tensor([[6, UNK_ID, 6]]),  # "cc" (the <unk> is not in the reference text)
            "token_lengths": torch.tensor([3]),
            "audio_seconds": torch.tensor([2.5]),
        },
    ]
    task = RecordingTask({5: [4, 5, 3, 6], 3: [4, 5], 4: [6]})  # "ab c" (right), "ab" (1 sub), "c" (1 deletion)
    figures = evaluate_recognizer(task, batches)
    # 2 character errors of 4 + 2 + 2 = 8 reference characters ("ab c" counts its space); 2 word errors of 4 words
    for mode in ("batch1", "batched"):
        assert figures[f"{mode}_cer"] == pytest.approx(2 / 8)
        assert figures[f"{mode}_wer"] == pytest.approx(2 / 4)
        assert figures[f"{mode}_rtf"] == pytest.approx(figures[f"{mode}_decode_seconds"] / 4.0)
    assert figures["audio_seconds"] == pytest.approx(4.0)
    assert figures["utterances"] == 3 and figures["tokens"] == 9 and figures["unknown_tokens"] == 1
    assert figures["threads"] == 1 and figures["rtf"] == figures["batch1_rtf"]
    # batch 1 sees each utterance alone with its padding cut off (after one warm-up call); batched sees the batches
    calls = task.model.calls
    assert calls[1:4] == [((1, 5, 3), [5]), ((1, 3, 3), [3]), ((1, 4, 3), [4])]
    assert calls[5:] == [((2, 5, 3), [5, 3]), ((1, 4, 3), [4])]
    assert task.training  # restored


def test_training_budget_is_exact_and_seeded(datamodule):
    runs = []
    for _ in range(2):
        L.seed_everything(3, verbose=False)
        task = CTCTask(datamodule.vocabulary, num_features=datamodule.num_features, **SIZES)
        runs.append(train_recognizer(task, datamodule, max_steps=5, seed=3, window=2))
    first, second = runs
    assert first.steps == 5 and len(first.losses) == 5 and first.parameters > 0
    assert first.losses == second.losses
    assert first.final_loss == pytest.approx(sum(loss for _, loss in first.losses[-2:]) / 2)


def test_evaluating_utterances_through_the_datamodule(datamodule):
    """SAN-M ignores padding, so decoding one by one and in padded batches give the same error rates."""
    L.seed_everything(0, verbose=False)
    task = AttentionTask(datamodule.vocabulary, num_features=datamodule.num_features, decoder_layers=1, **SIZES)
    train_recognizer(task, datamodule, max_steps=3)
    test = datamodule.utterances("test")
    figures = evaluate_recognizer(task, test, datamodule=datamodule, batch_size=3)
    assert figures["utterances"] == len(test)
    assert figures["audio_seconds"] == pytest.approx(sum(u.duration() for u in test), rel=1e-3)
    assert figures["batch1_cer"] == pytest.approx(figures["batched_cer"])
    assert figures["batch1_rtf"] > 0 and figures["batched_rtf"] > 0
    with pytest.raises(Exception, match="datamodule"):
        evaluate_recognizer(task, test)


CONFIGS = files("paperzoo.speech.paraformer.configs")


@pytest.mark.parametrize(("name", "task_class"), [("ctc_tiny", CTCTask), ("ar_tiny", AttentionTask)])
def test_tiny_configs_build_train_and_lower_the_loss(name, task_class):
    task, data = build_from_config(Path(str(CONFIGS / f"{name}.yaml")))
    assert type(task) is task_class and task.vocabulary == data.vocabulary
    batch = first_train_batch(data)
    check_forward_backward(task, batch)
    check_loss_drops(task, batch, steps=10)


@pytest.mark.parametrize("name", ["ctc_espeak", "ar_espeak"])
def test_espeak_configs_share_the_paraformer_checks_encoder_data_and_budget(name):
    """The baselines' real configs are the claim check's setting: Paraformer's config with the model swapped."""
    ours, paraformer = (yaml.safe_load((CONFIGS / f"{n}.yaml").read_text()) for n in (name, "paraformer_espeak"))
    assert ours["data"] == paraformer["data"] and ours["trainer"] == paraformer["trainer"]
    shared = ("encoder", "d_model", "num_heads", "encoder_layers", "ffn_dim", "dropout", "optimizer", "lr_scheduler")
    for key in shared:
        assert ours["model"]["init_args"][key] == paraformer["model"]["init_args"][key], key
    if name == "ar_espeak":
        for key in ("decoder_layers", "ctc_weight"):
            assert ours["model"]["init_args"][key] == paraformer["model"]["init_args"][key], key


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ctc_tiny", "ar_tiny"])
def test_tiny_configs_fit_and_round_trip_through_the_cli(name, tmp_path):
    config = Path(str(CONFIGS / f"{name}.yaml"))
    fit_tiny_and_round_trip(SimpleNamespace(config=lambda _: config), tmp_path)  # type: ignore[arg-type]
