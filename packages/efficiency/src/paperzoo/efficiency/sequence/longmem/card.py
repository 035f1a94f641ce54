"""The method card of LongMem (CATALOG 119)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="longmem",
    number=119,
    title="Augmenting Language Models with Long-Term Memory",
    arxiv="2306.07174",
    kind="train",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.longmem.model:LongMem",
        "paperzoo.efficiency.sequence.longmem.model:MemoryAugmentedAttention",
        "paperzoo.efficiency.sequence.longmem.model:fuse_memory_attention",
        "paperzoo.efficiency.sequence.longmem.model:pretrained_backbone",
        "paperzoo.efficiency.sequence.longmem.memory:MemoryBank",
        "paperzoo.efficiency.sequence.longmem.memory:DocumentMemory",
        "paperzoo.efficiency.sequence.longmem.task:LongMemTask",
        "paperzoo.efficiency.sequence.longmem.data:LongMemDataModule",
    ),
    claim=(
        "A frozen backbone whose past keys and values are cached in a chunked memory bank, read by a trainable "
        "residual SideNet with one memory-augmented layer, recalls facts stated beyond the local window, where the "
        "same SideNet without memory cannot; the gain needs a bank large enough to hold the facts."
    ),
    reference_code="https://github.com/Victorwz/LongMem",
    config_package="paperzoo.efficiency.sequence.longmem.configs",
    check="paperzoo.efficiency.sequence.longmem.check:check",
    task="paperzoo.efficiency.sequence.longmem.task:LongMemTask",
)
