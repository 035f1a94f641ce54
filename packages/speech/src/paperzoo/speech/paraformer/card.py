"""The method card of Paraformer (CATALOG 5)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="paraformer",
    number=5,
    title=("Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech Recognition"),
    arxiv="2206.08317",
    kind="train",
    domain="speech",
    entry_points=(
        "paperzoo.speech.paraformer.model:Paraformer",
        "paperzoo.speech.paraformer.cif:CIFPredictor",
        "paperzoo.speech.paraformer.cif:cif",
        "paperzoo.speech.paraformer.cif:quantity_loss",
        "paperzoo.speech.paraformer.decoder:ParaformerDecoder",
        "paperzoo.speech.paraformer.glm:glancing_mask",
        "paperzoo.speech.paraformer.mwer:mwer_loss",
        "paperzoo.speech.paraformer.mwer:sample_candidates",
        "paperzoo.speech.asr.encoder:build_encoder",
        "paperzoo.speech.asr.baselines:CTCTask",
        "paperzoo.speech.asr.baselines:AttentionTask",
        "paperzoo.speech.asr.harness:evaluate_recognizer",
        "paperzoo.speech.data.datamodule:SpeechDataModule",
    ),
    claim=(
        "A single-step non-autoregressive recognizer (CIF predictor + GLM sampler + parallel decoder) reaches the "
        "CER of an autoregressive attention decoder on the same encoder (within about 15% relative) while decoding "
        "more than 5x faster, and the GLM sampler is what closes the gap to plain single-step NAR."
    ),
    reference_code="https://github.com/modelscope/FunASR (funasr/models/paraformer/)",
    config_package="paperzoo.speech.paraformer.configs",
    check="paperzoo.speech.paraformer.check:check",
    task="paperzoo.speech.paraformer.task:ParaformerTask",
)
