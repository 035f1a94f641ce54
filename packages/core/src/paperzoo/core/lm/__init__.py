"""The small decoder-only LM shared across domains: model, task and text corpora."""

from paperzoo.core.lm.data import BPETokenizer, ByteTokenizer, Document, TextDataModule
from paperzoo.core.lm.gpt import GPT, gpt_1m, gpt_10m, gpt_100k, gpt_100m
from paperzoo.core.lm.task import CausalLMTask

__all__ = [
    "GPT",
    "BPETokenizer",
    "ByteTokenizer",
    "CausalLMTask",
    "Document",
    "TextDataModule",
    "gpt_100k",
    "gpt_100m",
    "gpt_10m",
    "gpt_1m",
]
