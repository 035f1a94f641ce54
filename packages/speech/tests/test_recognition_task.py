"""The shared recognition task: text from ids, and CER/WER scored on what the recognizer decodes."""

import torch

from paperzoo.speech.asr.recognizer import SpeechRecognizer, unpad_tokens
from paperzoo.speech.asr.task import RecognitionTask
from paperzoo.speech.data.tokenizer import IGNORE_ID, SPECIALS, ids_to_text

VOCABULARY = [*SPECIALS, "▁", "a", "b", "c"]  # ids 3 = word boundary, 4..6 = a, b, c


def test_ids_to_text_skips_specials_and_reads_word_boundaries():
    assert ids_to_text(VOCABULARY, [4, 5, 3, 0, 6, 1, 2]) == "ab c"
    assert ids_to_text(["<blank>", "<sos/eos>", "<unk>", "▁the", "re", "▁cat"], [3, 4, 5]) == "there cat"


def test_unpad_tokens_cuts_each_row_to_its_length():
    tokens = torch.tensor([[4, 5, 6], [6, IGNORE_ID, IGNORE_ID]])
    assert unpad_tokens(tokens, torch.tensor([3, 1])) == [[4, 5, 6], [6]]


class FixedRecognizer(SpeechRecognizer):
    """Decodes the same ids for every utterance; its loss is a parameter, so the task can step it."""

    def __init__(self, output: list[int]):
        super().__init__()
        self.output = output
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, features, feature_lengths, tokens, token_lengths):
        return {"loss": self.weight * features.mean(), "part": features.mean()}

    def decode(self, features, feature_lengths):
        return [self.output for _ in range(features.shape[0])]


class FixedTask(RecognitionTask):
    def __init__(self, vocabulary: list[str], output: list[int]):
        super().__init__(vocabulary)
        self.model = FixedRecognizer(output)


def test_validation_scores_character_and_word_error_rates_of_the_decoded_text():
    task = FixedTask(VOCABULARY, output=[4, 5, 3, 6])  # "ab c"
    batch = {
        "features": torch.ones(2, 5, 3),
        "feature_lengths": torch.tensor([5, 4]),
        "tokens": torch.tensor([[4, 5, 3, 6], [4, 4, 3, 6]]),  # "ab c" and "aa c"
        "token_lengths": torch.tensor([4, 4]),
        "audio_seconds": torch.tensor([1.0, 0.8]),
    }
    task.log = lambda *args, **kwargs: None  # outside a Trainer
    loss = task.step(batch, "val")
    assert torch.isclose(loss, torch.tensor(1.0))
    # one substituted character out of 8 reference characters; one substituted word out of 4
    assert torch.isclose(task.error_rates["val_cer"].compute(), torch.tensor(1 / 8))
    assert torch.isclose(task.error_rates["val_wer"].compute(), torch.tensor(1 / 4))
    assert task.vocab_size == len(VOCABULARY)


def test_predict_returns_the_text_of_each_utterance():
    task = FixedTask(VOCABULARY, output=[6, 3, 4])
    batch = {"features": torch.ones(3, 4, 2), "feature_lengths": torch.tensor([4, 4, 2])}
    assert task.predict_step(batch, 0) == ["c a"] * 3
