"""Paraformer: encoder, CIF predictor, GLM sampler and single-step NAR decoder, with optional MWER training.

"Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition", Zhifu Gao,
Shiliang Zhang, Ian McLoughlin and Zhijie Yan, Interspeech 2022 (https://arxiv.org/abs/2206.08317), CATALOG 5.

Implemented (facts from the paper and FunASR's `funasr/models/paraformer/`, read for facts, not copied):
- the encoder: `asr.encoder.build_encoder` (SAN-M as in the paper, or a conformer), shared with the AR and CTC
  baselines;
- the CIF predictor (`cif.CIFPredictor`): per-frame weights, integrate-and-fire, the quantity loss |sum(alpha) - N|,
  weights scaled to fire exactly N times in training, the 0.45 tail at inference;
- as FunASR's `predictor_bias: 1`, the target gets <sos/eos> appended, so CIF fires N + 1 times and the decoder learns
  to end on <eos> (decoding drops it with the other special ids);
- the single-step NAR decoder (`decoder.ParaformerDecoder`);
- the GLM sampler (`glm`): in training, a first pass of the decoder on the acoustic embeddings (no gradient), the
  Hamming distance d of its argmax to the target, ceil(lambda * d) acoustic embeddings replaced by target-token
  embeddings at random positions, and the cross-entropy (label smoothing 0.1, as FunASR's lsm_weight) of the second
  pass on the positions that were not replaced (GLAT's and the paper's L_GLM; `glm_loss_on_all=True` takes every
  position, as FunASR's code does). `sampling_ratio=0` is Paraformer without GLM: one pass on the acoustic
  embeddings, cross-entropy on every position;
- MWER (`mwer`), weight `mwer_weight` (0 = off): the decoder's distributions on the plain acoustic embeddings (the
  pass that decoding runs; with MWER on it keeps its gradient and also serves as the GLM first pass), N-best
  candidates sampled from them, the MWER loss added to the cross-entropy and quantity losses;
- an optional auxiliary CTC loss on the encoder (`ctc_weight`; FunASR's AISHELL Paraformer recipe uses 0.3, its
  industrial config 0), the hybrid form of the attention baseline: (1 - w) L_CE + w L_CTC;
- decoding: encoder, CIF with the tail, one decoder pass, argmax per position, special ids dropped.

Loss = (1 - ctc_weight) L_CE(GLM) + ctc_weight L_CTC + quantity_weight L_MAE + mwer_weight L_MWER (the paper's
L_total = gamma L_CE + L_MAE + L_werr, with gamma folded into the other weights).

Deviations: see `cif`, `glm`, `mwer` and `decoder` (order from a sinusoidal position encoding instead of SAN-M
decoder layers); no timestamps, no hotwords, no streaming.
"""

import torch
from torch.nn import functional as F

from paperzoo.core.errors import require
from paperzoo.speech.asr.ctc import CTCHead
from paperzoo.speech.asr.encoder import build_encoder
from paperzoo.speech.asr.recognizer import SpeechRecognizer
from paperzoo.speech.data.tokenizer import IGNORE_ID, SOS_EOS_ID, SPECIALS
from paperzoo.speech.paraformer.cif import CIFPredictor, quantity_loss
from paperzoo.speech.paraformer.decoder import ParaformerDecoder
from paperzoo.speech.paraformer.glm import glancing_embeddings, glancing_mask
from paperzoo.speech.paraformer.mwer import mwer_loss, sample_candidates


def append_eos(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [B, N] (IGNORE_ID pad), lengths [B] -> tokens [B, N + 1] with <sos/eos> at lengths[b], lengths + 1."""
    padded = F.pad(tokens, (0, 1), value=IGNORE_ID)
    padded = padded.scatter(1, lengths[:, None].long(), SOS_EOS_ID)
    return padded, lengths + 1


class Paraformer(SpeechRecognizer):
    """The Paraformer recognizer (see the module docstring).

    Args:
        vocab_size: V, including the special ids.
        input_dim: F, the feature width (560 for 80-d fbank with LFR 7).
        encoder: "sanm" or "conformer".
        d_model, num_heads, ffn_dim, dropout: shared by the encoder and the decoder.
        encoder_layers, decoder_layers: depths.
        encoder_kernel_size: SAN-M's memory kernel or the conformer's depthwise kernel (None: the encoder's default).
        cif_left_order, cif_right_order: the CIF convolution's context.
        tail_threshold: the CIF tail weight at inference (0 disables it).
        sampling_ratio: lambda of the GLM sampler (FunASR: 0.75); 0 disables GLM.
        glm_loss_on_all: cross-entropy on every position of the second pass (FunASR's code) instead of only on the
            positions that were not replaced (the paper).
        label_smoothing: of the cross-entropy.
        quantity_weight: weight of the quantity loss.
        mwer_weight: weight of the MWER loss (0 = off; the paper fine-tunes a trained model with it).
        mwer_candidates: N-best size for MWER.
        eos: append <sos/eos> to the target (FunASR's predictor_bias 1).
        ctc_weight: weight w of an auxiliary CTC loss on the encoder output (0 = none).
    """

    def __init__(
        self,
        vocab_size: int,
        input_dim: int,
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
    ):
        super().__init__()
        require(vocab_size > len(SPECIALS), f"vocab_size must exceed the {len(SPECIALS)} special ids, got {vocab_size}")
        require(0.0 <= sampling_ratio <= 1.0, f"GLM sampling_ratio must be in [0, 1], got {sampling_ratio}")
        require(mwer_weight >= 0 and mwer_candidates >= 2, "mwer_weight must be >= 0 and mwer_candidates >= 2")
        require(0.0 <= ctc_weight < 1.0, f"ctc_weight must be in [0, 1), got {ctc_weight}")
        self.vocab_size = vocab_size
        self.encoder = build_encoder(
            encoder, input_dim, d_model, num_heads, encoder_layers, ffn_dim, dropout, kernel_size=encoder_kernel_size
        )
        self.predictor = CIFPredictor(d_model, cif_left_order, cif_right_order, tail_threshold=tail_threshold)
        self.decoder = ParaformerDecoder(vocab_size, d_model, num_heads, decoder_layers, ffn_dim, dropout)
        self.sampling_ratio = sampling_ratio
        self.glm_loss_on_all = glm_loss_on_all
        self.label_smoothing = label_smoothing
        self.quantity_weight = quantity_weight
        self.mwer_weight = mwer_weight
        self.mwer_candidates = mwer_candidates
        self.eos = eos
        self.ctc_weight = ctc_weight
        self.ctc = CTCHead(d_model, vocab_size) if ctc_weight > 0 else None

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        memory, memory_lengths = self.encoder(features, feature_lengths)  # [B, T, D]
        targets, target_lengths = (tokens, token_lengths)
        if self.eos:
            targets, target_lengths = append_eos(tokens, token_lengths)
        targets = targets[:, : int(target_lengths.max())]  # [B, N]
        fired = self.predictor(memory, memory_lengths, target_lengths)  # N embeddings per utterance
        acoustic = fired.embeddings  # [B, N, D]
        valid = targets != IGNORE_ID  # [B, N]
        losses: dict[str, torch.Tensor] = {}

        first_logits = None
        use_glm = self.training and self.sampling_ratio > 0
        use_mwer = self.training and self.mwer_weight > 0
        if use_glm or use_mwer:
            with torch.set_grad_enabled(use_mwer and torch.is_grad_enabled()):
                first_logits = self.decoder(acoustic, target_lengths, memory, memory_lengths)  # [B, N, V]
        decoder_input, loss_positions = acoustic, valid
        if use_glm:
            assert first_logits is not None
            replaced = glancing_mask(first_logits.detach().argmax(-1), targets, target_lengths, self.sampling_ratio)
            semantic = self.decoder.embed(targets.clamp(min=0))  # [B, N, D]
            decoder_input = glancing_embeddings(acoustic, semantic, replaced)
            if not self.glm_loss_on_all:
                loss_positions = valid & ~replaced
            losses["glm_replaced"] = replaced.sum() / valid.sum()
        logits = self.decoder(decoder_input, target_lengths, memory, memory_lengths)  # [B, N, V]
        losses["ce"] = self._cross_entropy(logits, targets, loss_positions)
        losses["quantity"] = quantity_loss(fired.quantity, target_lengths)
        loss = (1 - self.ctc_weight) * losses["ce"] + self.quantity_weight * losses["quantity"]
        if self.ctc is not None:
            losses["ctc"] = self.ctc.loss(memory, memory_lengths, tokens, token_lengths)
            loss = loss + self.ctc_weight * losses["ctc"]
        if use_mwer:
            assert first_logits is not None
            log_probs = first_logits.log_softmax(-1)
            candidates, distinct = sample_candidates(log_probs, target_lengths, self.mwer_candidates)
            losses["mwer"] = mwer_loss(log_probs, candidates, targets.clamp(min=0), target_lengths, distinct)
            loss = loss + self.mwer_weight * losses["mwer"]
        losses["loss"] = loss
        return losses

    def _cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy averaged over `positions` [B, N] (0 when none is selected)."""
        selected = targets.masked_fill(~positions, IGNORE_ID)
        if not bool(positions.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.transpose(1, 2), selected, ignore_index=IGNORE_ID, label_smoothing=self.label_smoothing
        )

    @torch.no_grad()
    def decode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        memory, memory_lengths = self.encoder(features, feature_lengths)
        fired = self.predictor(memory, memory_lengths)  # predicted count, with the tail
        logits = self.decoder(fired.embeddings, fired.lengths, memory, memory_lengths)  # [B, N, V]
        predictions = logits.argmax(-1).tolist()
        return [
            [token for token in row[:length] if token >= len(SPECIALS)]
            for row, length in zip(predictions, fired.lengths.tolist(), strict=True)
        ]
