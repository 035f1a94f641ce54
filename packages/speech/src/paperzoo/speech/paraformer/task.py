"""`ParaformerTask`: trains `Paraformer` with the shared recognition task (CER/WER of decoded text).

"Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition", Gao et
al., Interspeech 2022 (https://arxiv.org/abs/2206.08317). The model's "loss" is L_CE (on the GLM second pass) +
quantity_weight L_MAE (+ mwer_weight L_MWER); its parts (ce, quantity, glm_replaced, mwer) are logged per stage.
"""

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.speech.asr.task import RecognitionTask
from paperzoo.speech.paraformer.model import Paraformer


class ParaformerTask(RecognitionTask):
    """A `RecognitionTask` over `Paraformer`.

    Args:
        vocabulary: token pieces by id (linked from the datamodule).
        num_features: F, the feature width (linked from the datamodule; 560 = 80-d fbank x LFR 7).
        encoder, d_model, num_heads, encoder_layers, decoder_layers, ffn_dim, dropout, encoder_kernel_size,
        cif_left_order, cif_right_order, tail_threshold, sampling_ratio, glm_loss_on_all, label_smoothing,
        quantity_weight, mwer_weight, mwer_candidates, eos, ctc_weight: see `Paraformer`.
        optimizer, lr_scheduler: see `BaseTask`.
    """

    model: Paraformer

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
        cif_left_order: int = 1,
        cif_right_order: int = 1,
        tail_threshold: float = 0.45,
        sampling_ratio: float = 0.75,
        glm_loss_on_all: bool = False,
        label_smoothing: float = 0.1,
        quantity_weight: float = 1.0,
        mwer_weight: float = 0.0,
        mwer_candidates: int = 4,
        eos: bool = True,
        ctc_weight: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupStableDecay,
    ):
        super().__init__(vocabulary, optimizer, lr_scheduler)
        self.model = Paraformer(
            vocab_size=len(self.vocabulary),
            input_dim=num_features,
            encoder=encoder,
            d_model=d_model,
            num_heads=num_heads,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            encoder_kernel_size=encoder_kernel_size,
            cif_left_order=cif_left_order,
            cif_right_order=cif_right_order,
            tail_threshold=tail_threshold,
            sampling_ratio=sampling_ratio,
            glm_loss_on_all=glm_loss_on_all,
            label_smoothing=label_smoothing,
            quantity_weight=quantity_weight,
            mwer_weight=mwer_weight,
            mwer_candidates=mwer_candidates,
            eos=eos,
            ctc_weight=ctc_weight,
        )
        self.save_hyperparameters()
