"""Claim check for Paraformer (CATALOG 5, arXiv:2206.08317): on the same encoder, data and training budget, the
single-step NAR Paraformer reaches the CER of an autoregressive attention decoder (within 15% relative) while
decoding at least 5x faster, and its GLM sampler beats the same model trained without it. MWER fine-tuning's effect
is reported whatever its sign.

Setting: a `SpeechDataModule` espeak-ng corpus (sentences of 1-4 words over the most frequent Wikipedia words plus
the KLettres English syllables and the ALSA prompt words, 10 voices, speeds 120-170 wpm, noise at 15-35 dB SNR on
half the utterances, 80-d fbank, LFR 7/6, global CMVN, SpecAugment on train, characters). Every model has the same
SAN-M encoder (`build_encoder("sanm", ...)`, same sizes) and is trained for the same number of steps with the same
optimizer, schedule, batch order and seed:
- Paraformer: CIF predictor, GLM sampler (lambda = `sampling_ratio`), NAR decoder of `decoder_layers` blocks;
- Paraformer without GLM: the same with lambda = 0 (one decoder pass on the acoustic embeddings);
- AR: the attention decoder of `decoder_layers` blocks (`asr.baselines.AttentionTask`), decoded greedily and with
  beam search (beam `beam_size`);
- CTC: the encoder with a CTC head, greedy decoding (`asr.baselines.CTCTask`).
Paraformer and AR both get the auxiliary CTC loss of weight `ctc_weight` (FunASR's AISHELL Paraformer recipe: 0.3,
the hybrid CTC/attention training of the AR baseline). MWER: the trained Paraformer is fine-tuned `finetune_steps`
more steps with L_MWER added (weight `mwer_weight`, `mwer_candidates` candidates sampled from the NAR
distributions), and, as the control, the same steps without it; its effect is MWER minus the control.

Measured (`asr.harness.evaluate_recognizer`, one CPU thread for everything): CER and WER on the held-out espeak test
sentences (unseen sentences, the training voices) and, as real human speech, on the KLettres English syllables and
the ALSA voice prompts (every word of both is in the training vocabulary); decoding RTF = decode time / audio time,
one utterance at a time (batch 1, the encoder included, features precomputed) and batched.

Decision rule (fixed before the full run), on the espeak test set:
- accuracy: Paraformer CER / min(AR greedy CER, AR beam CER) <= 1 + `CER_TOLERANCE` (15% relative);
- speed: RTF(AR greedy) / RTF(Paraformer) >= `MIN_SPEEDUP` at batch 1 (against the faster AR search);
- GLM: CER(no GLM) - CER(Paraformer) >= `GLM_MARGIN`.
Real-speech CERs, CTC, the batched RTFs, the speedup over AR beam search and MWER's effect are recorded, not decided.

Units: the committed run uses characters. At LFR's 60 ms frames English characters come 1.5 frames apart (median;
1.0 at the fastest voices), and Paraformer's English setups use BPE, so a second full run (same rule, budget and
models; `Setting.tokenizer="bpe"`, 256 units, 4 frames per unit) tried BPE. It was worse on every model at this
budget (test CER: Paraformer 0.890, no GLM 0.780, AR greedy 0.806, AR beam 0.808, CTC 0.728) and, with 2.3x shorter
token sequences, the AR decoder ran only 2.26x slower than Paraformer; the setting stays on characters. Both runs
leave every model early in training (CER > 0.5): the budget, not the method, limits this check.
A 4x budget (2,000 steps, 320 fine-tuning; `_check(replace(FULL, steps=2000, finetune_steps=320))`, outside the
10-minute limit, not the committed result) lowered every CER but turned the accuracy criterion: Paraformer 0.508, no
GLM 0.444, AR greedy 0.412, AR beam 0.374, CTC 0.357 (Paraformer / best AR 1.36; speedup 4.08x; GLM -0.064; MWER
-0.013 against its control). At 500 steps the CER parity was an artifact of undertraining.
"""

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.core.schedulers import WarmupStableDecay
from paperzoo.speech.asr.baselines import AttentionTask, CTCTask
from paperzoo.speech.asr.harness import TrainingFigures, evaluate_recognizer, train_recognizer
from paperzoo.speech.asr.task import RecognitionTask
from paperzoo.speech.data.datamodule import SpeechDataModule, collate_speech
from paperzoo.speech.data.real import alsa_utterances, klettres_utterances
from paperzoo.speech.paraformer.task import ParaformerTask

CER_TOLERANCE = 0.15
MIN_SPEEDUP = 5.0
GLM_MARGIN = 0.001


@dataclass(frozen=True)
class Setting:
    """The sizes of one run (see the module docstring)."""

    train_utterances: int
    test_utterances: int
    vocabulary_size: int
    steps: int
    finetune_steps: int
    d_model: int
    num_heads: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    min_words: int = 1
    max_words: int = 4
    batch_size: int = 16
    lr: float = 2e-3
    finetune_lr: float = 3e-4
    warmup_steps: int = 50
    dropout: float = 0.1
    ctc_weight: float = 0.3
    sampling_ratio: float = 0.75
    mwer_weight: float = 1.0
    mwer_candidates: int = 4
    beam_size: int = 5
    tokenizer: str = "char"
    bpe_vocab_size: int = 256
    seed: int = 0


QUICK = Setting(
    train_utterances=96,
    test_utterances=24,
    vocabulary_size=0,
    steps=40,
    finetune_steps=10,
    d_model=32,
    num_heads=2,
    encoder_layers=1,
    decoder_layers=1,
    ffn_dim=64,
    max_words=3,
    warmup_steps=5,
)
FULL = Setting(
    train_utterances=1500,
    test_utterances=150,
    vocabulary_size=200,
    steps=500,
    finetune_steps=80,
    d_model=96,
    num_heads=4,
    encoder_layers=3,
    decoder_layers=2,
    ffn_dim=384,
)


def real_word_list() -> list[str]:
    """The words of the real evaluation sets (KLettres English syllables, ALSA prompts), added to the corpus."""
    texts = [u.text for u in klettres_utterances("en", ("syllab",))] + [u.text for u in alsa_utterances()]
    return list(dict.fromkeys(word for text in texts for word in text.split()))


def build_datamodule(setting: Setting) -> SpeechDataModule:
    extra = real_word_list()
    if setting.vocabulary_size == 0:  # quick mode: a closed list of common words, no Wikipedia parsing
        extra = [*extra, "the", "of", "and", "in", "to", "is", "was", "for", "on", "as", "with", "by"]
    datamodule = SpeechDataModule(
        vocabulary_size=setting.vocabulary_size,
        extra_words=extra,
        train_utterances=setting.train_utterances,
        dev_utterances=8,
        test_utterances=setting.test_utterances,
        min_words=setting.min_words,
        max_words=setting.max_words,
        tokenizer=setting.tokenizer,
        bpe_vocab_size=setting.bpe_vocab_size,
        batch_size=setting.batch_size,
        seed=setting.seed,
    )
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def encoder_args(setting: Setting) -> dict[str, Any]:
    """The arguments every task's encoder is built from (the same SAN-M for all)."""
    return dict(
        encoder="sanm",
        d_model=setting.d_model,
        num_heads=setting.num_heads,
        encoder_layers=setting.encoder_layers,
        ffn_dim=setting.ffn_dim,
        dropout=setting.dropout,
    )


def build_task(setting: Setting, datamodule: SpeechDataModule, kind: str, lr: float, warmup: int, **extra: Any):
    """A freshly initialised task (seeded, so equal architectures start from equal weights)."""
    L.seed_everything(setting.seed, verbose=False)
    common = dict(
        vocabulary=datamodule.vocabulary,
        num_features=datamodule.num_features,
        optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        lr_scheduler=partial(WarmupStableDecay, warmup_steps=warmup, decay_steps=0.2),
        **encoder_args(setting),
    )
    if kind == "paraformer":
        return ParaformerTask(
            decoder_layers=setting.decoder_layers,
            ctc_weight=setting.ctc_weight,
            mwer_candidates=setting.mwer_candidates,
            **common,
            **extra,
        )
    if kind == "ar":
        return AttentionTask(decoder_layers=setting.decoder_layers, ctc_weight=setting.ctc_weight, **common, **extra)
    if kind == "ctc":
        return CTCTask(**common, **extra)
    raise ValueError(f"unknown model kind {kind!r}")


def measure(
    task: RecognitionTask, datamodule: SpeechDataModule, test: DataLoader, training: TrainingFigures | None
) -> dict[str, float]:
    """Test-set CER/WER/RTF (batch 1 and batched), real-speech CER/WER and the training figures of one model."""
    figures = {f"test {k}": v for k, v in evaluate_recognizer(task, test).items() if k not in ("threads",)}
    for name, utterances in (("klettres", klettres_utterances("en", ("syllab",))), ("alsa", alsa_utterances())):
        real = evaluate_recognizer(task, utterances, datamodule=datamodule, batched=False)
        figures |= {f"{name} cer": real["cer"], f"{name} wer": real["wer"], f"{name} utterances": real["utterances"]}
    if training is not None:
        figures |= {
            "train seconds": training.seconds,
            "train steps/s": training.steps_per_s,
            "final train loss": training.final_loss,
            "parameters": float(training.parameters),
        }
    return figures


def check(quick: bool = False) -> ClaimResult:
    with torch_threads(1):
        return _check(QUICK if quick else FULL)


def _check(setting: Setting) -> ClaimResult:
    datamodule = build_datamodule(setting)
    test = DataLoader(datamodule.test_set, batch_size=setting.batch_size, collate_fn=collate_speech)
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, list[tuple[float, float]]] = {}

    def train(name: str, task: RecognitionTask, steps: int, seed: int) -> TrainingFigures:
        figures = train_recognizer(task, datamodule, steps, seed=seed, gradient_clip_val=5.0)
        curves[name] = figures.losses[:: max(1, len(figures.losses) // 100)]
        return figures

    base_args = (setting, datamodule)
    ratio = setting.sampling_ratio
    paraformer = build_task(*base_args, "paraformer", setting.lr, setting.warmup_steps, sampling_ratio=ratio)
    training = train("Paraformer", paraformer, setting.steps, setting.seed)
    results["Paraformer"] = measure(paraformer, datamodule, test, training)

    no_glm = build_task(*base_args, "paraformer", setting.lr, setting.warmup_steps, sampling_ratio=0.0)
    results["Paraformer without GLM"] = measure(
        no_glm, datamodule, test, train("Paraformer without GLM", no_glm, setting.steps, setting.seed)
    )

    ar = build_task(*base_args, "ar", setting.lr, setting.warmup_steps, beam_size=1)
    ar_training = train("AR", ar, setting.steps, setting.seed)
    results["AR greedy"] = measure(ar, datamodule, test, ar_training)
    ar.model.beam_size = setting.beam_size
    results[f"AR beam {setting.beam_size}"] = measure(ar, datamodule, test, ar_training)

    ctc = build_task(*base_args, "ctc", setting.lr, setting.warmup_steps)
    results["CTC greedy"] = measure(ctc, datamodule, test, train("CTC", ctc, setting.steps, setting.seed))

    # MWER fine-tuning from the trained Paraformer, against the same number of steps without MWER.
    for name, weight in (("Paraformer + MWER fine-tuning", setting.mwer_weight), ("Paraformer + CE fine-tuning", 0.0)):
        tuned = build_task(
            *base_args,
            "paraformer",
            setting.finetune_lr,
            0,
            sampling_ratio=setting.sampling_ratio,
            mwer_weight=weight,
        )
        tuned.load_state_dict(paraformer.state_dict())
        results[name] = measure(tuned, datamodule, test, train(name, tuned, setting.finetune_steps, setting.seed + 1))

    para, beam_name = results["Paraformer"], f"AR beam {setting.beam_size}"
    best_ar_cer = min(results["AR greedy"]["test cer"], results[beam_name]["test cer"])
    cer_ratio = para["test cer"] / best_ar_cer if best_ar_cer > 0 else float("inf")
    speedup = results["AR greedy"]["test batch1_rtf"] / para["test batch1_rtf"]
    summary = {
        "CER ratio Paraformer / best AR": cer_ratio,
        "speedup over AR greedy (batch 1)": speedup,
        f"speedup over AR beam {setting.beam_size} (batch 1)": results[beam_name]["test batch1_rtf"]
        / para["test batch1_rtf"],
        "speedup over AR greedy (batched)": results["AR greedy"]["test batched_rtf"] / para["test batched_rtf"],
        "GLM gain (no-GLM CER - Paraformer CER)": results["Paraformer without GLM"]["test cer"] - para["test cer"],
        "MWER effect (MWER - CE fine-tuning CER)": results["Paraformer + MWER fine-tuning"]["test cer"]
        - results["Paraformer + CE fine-tuning"]["test cer"],
    }
    criteria = [
        Criterion("Paraformer test CER / min(AR greedy, AR beam) test CER", cer_ratio, "<=", 1 + CER_TOLERANCE),
        Criterion("decoding speedup: RTF(AR greedy) / RTF(Paraformer), batch 1", speedup, ">=", MIN_SPEEDUP),
        Criterion(
            "GLM: no-GLM test CER - Paraformer test CER",
            summary["GLM gain (no-GLM CER - Paraformer CER)"],
            ">=",
            GLM_MARGIN,
        ),
    ]
    return ClaimResult(
        key="paraformer",
        claim=(
            "On the same encoder, data and budget, single-step NAR Paraformer's CER is within 15% relative of an "
            "autoregressive attention decoder's at 5x or faster decoding, and its GLM sampler beats training "
            "without it."
        ),
        paper_reported=(
            "Paraformer (arXiv:2206.08317, abstract and experiments): on AISHELL-1, AISHELL-2 and a 20,000-hour "
            "industrial task, CER comparable to the AR transformer's with more than 10x faster decoding; in the "
            "ablations the GLM sampler and MWER training each lower the single-step NAR model's CER."
        ),
        decision_rule=(
            f"espeak test set: Paraformer CER / min(AR greedy, AR beam {setting.beam_size}) CER <= "
            f"{1 + CER_TOLERANCE:.2f}; RTF(AR greedy) / RTF(Paraformer) at batch 1 >= {MIN_SPEEDUP}; no-GLM CER - "
            f"Paraformer CER >= {GLM_MARGIN} (same SAN-M encoder, data, steps, optimizer, schedule, seed; one CPU "
            "thread)"
        ),
        method=para | summary,
        baselines={name: figures for name, figures in results.items() if name != "Paraformer"},
        criteria=criteria,
        curves=curves,
        plot={"xlabel": "step", "ylabel": "training loss", "yscale": "log"},
        config=asdict(setting)
        | {
            "vocabulary": len(datamodule.vocabulary),
            "train utterances kept": len(datamodule.train_set),
            "test utterances": len(datamodule.test_set),
            "num_features": datamodule.num_features,
            "encoder": "sanm",
        },
    )
