"""LightSeq (arXiv:2310.03294): sequence-parallel exact attention across processes.

- `blockwise`: single-process blockwise attention with online-softmax partials and their exact merge (imported by
  other long-sequence modules);
- `ring`: DistAttn, the ring K/V exchange over `torch.distributed` with load-balanced causal scheduling, overlapped
  communication, GQA/MQA and a distributed exact backward; rematerialisation-aware checkpointing;
- `head_parallel`: the all-to-all head-parallel baseline (DeepSpeed-Ulysses style);
- `comm`: the byte counter both schemes are measured with.
"""

from paperzoo.efficiency.sequence.lightseq.blockwise import (
    Partial,
    attention_block,
    attention_block_backward,
    blockwise_attention,
    blockwise_attention_with_lse,
    dense_attention,
    merge_partials,
)

__all__ = [
    "Partial",
    "attention_block",
    "attention_block_backward",
    "blockwise_attention",
    "blockwise_attention_with_lse",
    "dense_attention",
    "merge_partials",
]
