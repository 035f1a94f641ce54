"""LongMem (CATALOG 119): "Augmenting Language Models with Long-Term Memory", arXiv:2306.07174.

A frozen byte-level GPT caches one layer's attention keys and values in a chunked FIFO memory bank (`memory`); a
trainable residual SideNet with one memory-augmented layer retrieves the top-K chunks and fuses them with its local
attention (`model`); `task.LongMemTask` trains it with the LM loss on long documents with far-back facts (`data`).
"""

from paperzoo.efficiency.sequence.longmem.data import LongMemDataModule
from paperzoo.efficiency.sequence.longmem.memory import DocumentMemory, MemoryBank
from paperzoo.efficiency.sequence.longmem.model import LongMem, MemoryAugmentedAttention, pretrained_backbone
from paperzoo.efficiency.sequence.longmem.task import LongMemTask

__all__ = [
    "DocumentMemory",
    "LongMem",
    "LongMemDataModule",
    "LongMemTask",
    "MemoryAugmentedAttention",
    "MemoryBank",
    "pretrained_backbone",
]
