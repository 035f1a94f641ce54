"""The tasks of Paraformer's baselines: `CTCTask` (CTC, greedy decoding) and `AttentionTask` (an autoregressive
attention decoder, greedy or beam search), both over the shared `RecognitionTask` (CER/WER of decoded text).

Their encoder arguments are named as `ParaformerTask`'s (encoder, d_model, num_heads, encoder_layers, ffn_dim, dropout,
encoder_kernel_size), so a claim check builds all three on the same encoder from one dict.
"""

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.speech.asr.autoregressive import AttentionRecognizer
from paperzoo.speech.asr.ctc import CTCRecognizer
from paperzoo.speech.asr.encoder import build_encoder
from paperzoo.speech.asr.task import RecognitionTask


class CTCTask(RecognitionTask):
    """A `RecognitionTask` over `CTCRecognizer`.

    Args:
        vocabulary: token pieces by id (linked from the datamodule).
        num_features: F, the feature width (linked from the datamodule; 560 = 80-d fbank x LFR 7).
        encoder: "sanm" or "conformer" (`build_encoder`).
        d_model, num_heads, encoder_layers, ffn_dim, dropout: the encoder's sizes.
        encoder_kernel_size: SAN-M's memory-block kernel (default 11) or the conformer's convolution (default 15).
        optimizer, lr_scheduler: see `BaseTask`.
    """

    model: CTCRecognizer

    def __init__(
        self,
        vocabulary: list[str],
        num_features: int = 560,
        encoder: str = "sanm",
        d_model: int = 256,
        num_heads: int = 4,
        encoder_layers: int = 6,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        encoder_kernel_size: int | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(vocabulary, optimizer, lr_scheduler)
        self.model = CTCRecognizer(
            build_encoder(
                encoder,
                num_features,
                d_model,
                num_heads,
                encoder_layers,
                ffn_dim,
                dropout,
                kernel_size=encoder_kernel_size,
            ),
            vocab_size=len(self.vocabulary),
        )
        self.save_hyperparameters()


class AttentionTask(RecognitionTask):
    """A `RecognitionTask` over `AttentionRecognizer` (the autoregressive baseline).

    Args:
        vocabulary, num_features, encoder, d_model, num_heads, encoder_layers, ffn_dim, dropout,
        encoder_kernel_size: as `CTCTask`.
        decoder_layers: transformer decoder blocks (same width, heads and feed-forward as the encoder).
        label_smoothing: eps of the cross-entropy.
        ctc_weight: weight of an auxiliary CTC loss on the encoder (0 = pure attention).
        beam_size: 1 = greedy search, else beam search (`task.model.beam_size` may be changed after training).
        max_length_ratio: decoding stops after ceil(ratio x encoder frames) tokens.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    model: AttentionRecognizer

    def __init__(
        self,
        vocabulary: list[str],
        num_features: int = 560,
        encoder: str = "sanm",
        d_model: int = 256,
        num_heads: int = 4,
        encoder_layers: int = 6,
        decoder_layers: int = 3,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        encoder_kernel_size: int | None = None,
        label_smoothing: float = 0.1,
        ctc_weight: float = 0.0,
        beam_size: int = 1,
        max_length_ratio: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(vocabulary, optimizer, lr_scheduler)
        self.model = AttentionRecognizer(
            build_encoder(
                encoder,
                num_features,
                d_model,
                num_heads,
                encoder_layers,
                ffn_dim,
                dropout,
                kernel_size=encoder_kernel_size,
            ),
            vocab_size=len(self.vocabulary),
            num_heads=num_heads,
            decoder_layers=decoder_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            label_smoothing=label_smoothing,
            ctc_weight=ctc_weight,
            beam_size=beam_size,
            max_length_ratio=max_length_ratio,
        )
        self.save_hyperparameters()
