"""The method card of the unified view of long-sequence models (CATALOG 110)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="unified",
    number=110,
    title="A Unified View of Long-Sequence Models towards Modeling Million-Scale Dependencies",
    arxiv="2302.06218",
    kind="component",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.mixer:TokenMixer",
        "paperzoo.efficiency.sequence.mixer:build_mixer",
        "paperzoo.efficiency.sequence.mixer:register_mixer",
        "paperzoo.efficiency.sequence.testing:assert_mixer_contract",
        "paperzoo.efficiency.sequence.attention:AttentionMixer",
        "paperzoo.efficiency.sequence.linear_attention:LinearAttentionMixer",
        "paperzoo.efficiency.sequence.backbone:SequenceModel",
        "paperzoo.efficiency.sequence.lra.listops:ListOpsDataModule",
    ),
    claim=(
        "Every long-sequence layer is a token mixing y = M(x) V x whose structure classifies it (Toeplitz for long "
        "convolutions, semi-separable for SSMs, input-dependent for attention and Mamba), and exact attention "
        "computed blockwise with online softmax equals vanilla attention in memory proportional to the block size."
    ),
    reference_code="none published; the template is paperzoo.efficiency.sequence.mixer.TokenMixer",
    config_package="paperzoo.efficiency.sequence.unified.configs",
    check="paperzoo.efficiency.sequence.unified.check:check",
    task="paperzoo.efficiency.sequence.task:SequenceClassificationTask",
)
