"""`DuplexDataModule`: generated full-duplex dialogues (espeak-ng speech, echo, barge-ins, noise) with per-block
state-token labels from the reference (oracle) rendering.

Splits draw their user clauses from disjoint Wikipedia sentence fragments (the held-out dialogues contain no text
the model was trained on), and each split's dialogues from their own seed. The model's responses come from a
shared pool in the model's one voice.

A batch (teacher forcing on the reference rendering, in windows of `window_blocks`):
    mic       [B, N, frames, F]  fbank of what the microphone heard, per 80 ms block
    playback  [B, N, frames, F]  fbank of what the model played
    state     [B, N] long        LISTEN / SPEAK during each block
    tokens    [B, N] long        the state token decided at the end of each block (IGNORE: padding, or the block
                                  where the response ran out by itself)
    lengths   [B] long           blocks per dialogue
Features are cached atomically under `cache_dir("speech", "duplex", <key of every setting>)`.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm

from paperzoo.core.data.base import BaseDataModule
from paperzoo.core.errors import require
from paperzoo.core.io import atomic_torch_save, cache_dir, load_checkpoint_file
from paperzoo.speech.duplex.dialogues import (
    DialogueConfig,
    DialogueScript,
    SpeechPool,
    config_key,
    make_scripts,
    simulate,
    speech_pool,
    split_texts,
)
from paperzoo.speech.duplex.model import block_features
from paperzoo.speech.duplex.scheduler import IGNORE

SPLITS = ("train", "val", "test")
SPLIT_SEED_OFFSET = {"train": 0, "val": 1000, "test": 2000}


class DialogueDataset(Dataset):
    """Per-dialogue tensors (see the module docstring for the keys)."""

    def __init__(self, items: list[dict[str, torch.Tensor]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


def collate_dialogues(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad dialogues to the longest: features with 0, states with LISTEN, tokens with IGNORE."""
    lengths = torch.tensor([item["tokens"].numel() for item in items])
    longest = int(lengths.max())

    def pad(key: str, value: float) -> torch.Tensor:
        shape = (len(items), longest, *items[0][key].shape[1:])
        out = torch.full(shape, value, dtype=items[0][key].dtype)
        for i, item in enumerate(items):
            out[i, : item[key].shape[0]] = item[key]
        return out

    return {
        "mic": pad("mic", 0.0),
        "playback": pad("playback", 0.0),
        "state": pad("state", 0),
        "tokens": pad("tokens", IGNORE),
        "lengths": lengths,
    }


@dataclass(frozen=True)
class PoolSizes:
    """Distinct clause texts per split and response texts (shared by all splits)."""

    train: int = 240
    val: int = 60
    test: int = 120
    responses: int = 80


class DuplexDataModule(BaseDataModule):
    """Generated full-duplex dialogues for the SALMONN-omni duplex component.

    Args:
        num_train, num_val, num_test: dialogues per split.
        turns, max_clauses, barge_in_prob: see `DialogueConfig` (the rest of it keeps its defaults unless
            `dialogue` overrides them).
        dialogue: further `DialogueConfig` fields.
        clause_texts: distinct clause texts for the train / val / test pools.
        response_texts: distinct response texts.
        num_mel_bins: fbank bins (linked to the task as `num_features`).
        window_blocks: dialogues are cut into windows of this many blocks (hop: half of it; the last window ends
            at the dialogue's end) for teacher-forced training, so batches are short and uniform; None keeps whole
            dialogues. The model's recurrent state starts from zero in each window, so a window after the first has
            no labels in its first quarter (every block keeps a label in some window, with at least that much
            context or from the dialogue's start).
        workers: parallel espeak-ng processes.
        batch_size, num_workers, seed: see `BaseDataModule`.
    """

    def __init__(
        self,
        num_train: int = 160,
        num_val: int = 16,
        num_test: int = 48,
        turns: int = 4,
        max_clauses: int = 3,
        barge_in_prob: float = 0.4,
        dialogue: dict[str, Any] | None = None,
        clause_texts: tuple[int, int, int] = (240, 60, 120),
        response_texts: int = 80,
        num_mel_bins: int = 40,
        window_blocks: int | None = 100,
        workers: int = 2,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(None, batch_size, num_workers, seed)
        require(min(num_train, num_val, num_test) >= 1, "every split needs at least one dialogue")
        require(num_mel_bins > 0, f"num_mel_bins must be positive, got {num_mel_bins}")
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.config = DialogueConfig(
            turns=turns, max_clauses=max_clauses, barge_in_prob=barge_in_prob, **(dialogue or {})
        )
        self.pool_sizes = PoolSizes(*clause_texts, responses=response_texts)
        require(window_blocks is None or window_blocks >= 2, f"window_blocks must be >= 2, got {window_blocks}")
        self.num_mel_bins = self.num_features = num_mel_bins
        self.window_blocks = window_blocks
        self.workers = workers
        self._pools: dict[str, SpeechPool] = {}
        self._scripts: dict[str, list[DialogueScript]] = {}

    def pool(self, split: str) -> SpeechPool:
        """The synthesized speech of `split` (cached)."""
        if split not in self._pools:
            sizes = self.pool_sizes
            texts = split_texts(
                {"train": sizes.train, "val": sizes.val, "test": sizes.test, "responses": sizes.responses}, self.seed
            )
            offset = SPLIT_SEED_OFFSET[split]
            self._pools[split] = speech_pool(
                texts[split], texts["responses"], seed=self.seed + offset, workers=self.workers
            )
        return self._pools[split]

    def scripts(self, split: str) -> list[DialogueScript]:
        """The dialogue scripts of `split` (for closed-loop evaluation of a policy)."""
        require(split in SPLITS, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split not in self._scripts:
            seed = self.seed + SPLIT_SEED_OFFSET[split]
            self._scripts[split] = make_scripts(self.pool(split), self.config, self.counts[split], seed)
        return self._scripts[split]

    def _features(self, split: str) -> list[dict[str, torch.Tensor]]:
        key = config_key(self.config, self.pool_sizes, self.counts[split], self.num_mel_bins, self.seed, split)
        path = cache_dir("speech", "duplex") / f"features-{split}-{key}.pt"
        if path.exists():
            return load_checkpoint_file(path)["items"]
        items = []
        for script in tqdm(self.scripts(split), desc=f"duplex {split} dialogues", leave=False):
            rendering = simulate(script)
            items.append(
                {
                    "mic": block_features(rendering.mic, self.num_mel_bins),
                    "playback": block_features(rendering.playback, self.num_mel_bins),
                    "state": rendering.states,
                    "tokens": rendering.tokens,
                }
            )
        atomic_torch_save({"items": items}, path)
        return items

    def prepare_data(self) -> None:
        for split in SPLITS:
            self._features(split)

    def _windows(self, split: str) -> DialogueDataset:
        items = self._features(split)
        if self.window_blocks is None:
            return DialogueDataset(items)
        size, windows = self.window_blocks, []
        for item in items:
            blocks = item["tokens"].numel()
            starts = list(range(0, max(blocks - size, 0) + 1, size // 2))
            if starts[-1] + size < blocks:
                starts.append(blocks - size)
            for a in starts:
                window = {key: value[a : a + size] for key, value in item.items()}
                if a > 0:  # no loss while the recurrent state warms up: these blocks are learnt in the window before
                    window["tokens"] = window["tokens"].clone()
                    window["tokens"][: size // 4] = IGNORE
                windows.append(window)
        return DialogueDataset(windows)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._windows("train")
        self.val_set = self._windows("val")
        self.test_set = self._windows("test")
        self.predict_set = self.test_set

    def make_loader(self, dataset: Dataset, train: bool) -> StatefulDataLoader:
        loader = super().make_loader(dataset, train)
        loader.collate_fn = collate_dialogues
        return loader
