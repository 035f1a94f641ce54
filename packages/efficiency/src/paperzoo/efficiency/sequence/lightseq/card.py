"""The method card of LightSeq (CATALOG 9)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="lightseq",
    number=9,
    title="LightSeq: Sequence Level Parallelism for Distributed Training of Long Context Transformers",
    arxiv="2310.03294",
    kind="component",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.lightseq.blockwise:blockwise_attention",
        "paperzoo.efficiency.sequence.lightseq.blockwise:attention_block",
        "paperzoo.efficiency.sequence.lightseq.blockwise:merge_partials",
        "paperzoo.efficiency.sequence.lightseq.ring:ring_attention",
        "paperzoo.efficiency.sequence.lightseq.ring:make_schedule",
        "paperzoo.efficiency.sequence.lightseq.ring:checkpoint_attention_layer",
        "paperzoo.efficiency.sequence.lightseq.ring:SequenceParallelAttention",
        "paperzoo.efficiency.sequence.lightseq.head_parallel:head_parallel_attention",
        "paperzoo.efficiency.sequence.lightseq.comm:Comm",
        "paperzoo.efficiency.sequence.lightseq.launch:run_lightseq",
    ),
    claim=(
        "Sequence-parallel ring attention is exact for MHA, GQA and MQA and communicates less than head-parallel "
        "attention when there are fewer key/value heads than workers; its causal schedule balances work and its "
        "checkpointing skips one attention forward per layer."
    ),
    reference_code="https://github.com/RulinShao/LightSeq",
    config_package="paperzoo.efficiency.sequence.lightseq.configs",
    check="paperzoo.efficiency.sequence.lightseq.check:check",
    run="paperzoo.efficiency.sequence.lightseq.launch:run_lightseq",
)
