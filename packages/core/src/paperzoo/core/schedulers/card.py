"""The method card of MiniCPM's warmup-stable-decay schedule (CATALOG 75)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="wsd",
    number=75,
    title="MiniCPM: Unveiling the Potential of Small Language Models with Scalable Training Strategies",
    arxiv="2404.06395",
    kind="component",
    domain="core",
    entry_points=(
        "paperzoo.core.schedulers.wsd:WarmupStableDecay",
        "paperzoo.core.schedulers.wsd:wsd_multiplier",
        "paperzoo.core.lm.data:TextDataModule",
    ),
    claim=(
        "A warmup-stable-decay schedule ends at a loss at or below cosine decay for the same budget, and a short "
        "decay branched from any stable-phase checkpoint matches a cosine run trained for that budget."
    ),
    reference_code="https://github.com/OpenBMB/MiniCPM (transformers.get_wsd_schedule)",
    config_package="paperzoo.core.schedulers.configs",
    check="paperzoo.core.schedulers.check:check",
    task="paperzoo.core.lm.task:CausalLMTask",
)
