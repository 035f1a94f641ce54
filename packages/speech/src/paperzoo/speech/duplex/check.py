"""Claim check for SALMONN-omni's duplex component (CATALOG 1, arXiv:2411.18138): a model that reads the microphone
and its own output stream per 80 ms block and emits state tokens takes turns and handles barge-ins better than an
energy-VAD + fixed-timeout pipeline, with the echo of its own voice and background noise in the microphone.

Setting: `DuplexDataModule` dialogues (espeak-ng users in 8 voices, clauses separated by 0.2-0.9 s pauses inside
a turn, barge-ins in 40% of the turns, echo gain 0.15-0.8, stationary noise at 10-30 dB SNR and noise bursts; the
reference answers 0.16-0.56 s after a turn ends and stops 0.24 s after a barge-in begins). The `DuplexStateModel`
(80-bin fbank per 10 ms frame, 8 frames per block, GRU width 64, teacher-forced on the oracle's tokens in 8 s
windows, `<shift>` weighted 8) is trained for `steps` AdamW steps on one thread.

Both policies are then run CLOSED-LOOP through the same `DuplexScheduler` and environment on the same held-out
test dialogues (texts unseen in training): the simulated user reacts to what each policy does. Each policy's free
parameters are chosen on the same training dialogues by the same objective, the mean of turn-taking F1 and barge-in
F1: the model's `<shift>` probability threshold from `THRESHOLDS`; the VAD's energy threshold, silence timeout,
speaking threshold and onset length by coordinate search over the `Setting`'s grid. The oracle (privileged, the labels'
source) is run too, as the ceiling.

Decision rule (fixed before the full run): on the test dialogues, model turn-taking F1 - VAD turn-taking F1 >=
`MARGIN` and model SCRIPTED barge-in F1 - VAD scripted barge-in F1 >= `MARGIN` (events matched within 0.8 s after
the reference moment; see `metrics`). The stop latency after a barge-in is reported for both, not decided on.

Rule change (made before the rerun recorded in benchmarks/results/salmonn_omni.json, and not because of its
outcome): the first full run decided on the barge-in F1 over ANY user speech overlapping the model. That metric
credits a policy for stopping after overlaps it caused itself: starting in a pause inside a user turn makes the
user's next clause overlap the model, and stopping then counted as a hit (212 "barge-ins" for the model, 97 for the
VAD, 36 for the oracle on the same 48 dialogues). The rule now uses the scripted barge-ins only (the turns the
dialogue script times to start during the model's answer); stops after self-caused overlaps are false alarms
there. The old figure is still reported ("barge-in F1"). Nothing else changed: same model, training budget,
threshold grids and tuning objective (which still averages turn-taking F1 and the any-overlap barge-in F1).
"""

import itertools
import time
from dataclasses import asdict, dataclass

import torch

from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.speech.duplex.data import DuplexDataModule
from paperzoo.speech.duplex.dialogues import BatchPolicy, DialogueScript, PerDialogue, simulate_many
from paperzoo.speech.duplex.metrics import STOP_TOLERANCE, TAKE_TOLERANCE, DuplexScores, score_dialogues
from paperzoo.speech.duplex.model import ModelPolicy
from paperzoo.speech.duplex.task import DuplexTask
from paperzoo.speech.duplex.vad import EnergyVADPolicy

MARGIN = 0.02
DECIDED = ("turn-taking F1", "scripted barge-in F1")
RULE_CHANGE = (
    "The barge-in criterion uses the scripted barge-ins only; the first full run decided on the barge-in F1 over "
    "any user speech overlapping the model, which credited stops after overlaps a policy caused itself by starting "
    "in a pause inside a user turn (212 overlap events in all for the model, 36 scripted ones for the oracle). The "
    "rule was changed before this rerun because the old metric credited self-caused events, not because of the "
    "outcome; model, training budget, threshold grids and tuning objective are unchanged."
)
THRESHOLDS = (0.2, 0.35, 0.5, 0.65)


@dataclass(frozen=True)
class Setting:
    num_train: int
    num_test: int
    tune_dialogues: int
    steps: int
    clause_texts: tuple[int, int, int]
    response_texts: int
    vad_thresholds_db: tuple[float, ...]
    vad_timeouts: tuple[float, ...]
    vad_speaking_db: tuple[float, ...]
    vad_onsets: tuple[int, ...]
    dim: int = 64
    batch_size: int = 8
    lr: float = 3e-3
    num_mel_bins: int = 80
    shift_weight: float = 8.0
    seed: int = 0


QUICK = Setting(
    num_train=16,
    num_test=6,
    tune_dialogues=4,
    steps=100,
    clause_texts=(60, 8, 30),
    response_texts=20,
    vad_thresholds_db=(-40.0, -32.0),
    vad_timeouts=(0.4, 0.56, 0.72),
    vad_speaking_db=(-30.0, -22.0),
    vad_onsets=(2,),
)
FULL = Setting(
    num_train=160,
    num_test=48,
    tune_dialogues=16,
    steps=1000,
    clause_texts=(240, 16, 120),
    response_texts=80,
    vad_thresholds_db=(-44.0, -40.0, -36.0, -32.0, -28.0),
    vad_timeouts=(0.32, 0.4, 0.48, 0.56, 0.64, 0.72, 0.8),
    vad_speaking_db=(-36.0, -32.0, -28.0, -24.0, -20.0, -16.0),
    vad_onsets=(1, 2, 3),
)


def check(quick: bool = False) -> ClaimResult:
    with torch_threads(1):
        return _check(QUICK if quick else FULL)


def evaluate(scripts: list[DialogueScript], policy: BatchPolicy | None) -> DuplexScores:
    """Closed-loop scores of `policy` (None = the oracle) on `scripts`, played in lockstep."""
    return score_dialogues(simulate_many(scripts, policy))


def vad_policy(params: dict[str, float]) -> PerDialogue:
    return PerDialogue(lambda _: EnergyVADPolicy(**params))  # type: ignore[arg-type]


def decide(model: dict[str, float], vad: dict[str, float]) -> list[Criterion]:
    """The decision rule on the test figures of the model and the VAD baseline."""
    return [
        Criterion(
            f"model - VAD {metric} (closed loop, test)",
            model[metric] - vad[metric],
            ">=",
            MARGIN,
        )
        for metric in DECIDED
    ]


def objective(scores: DuplexScores) -> float:
    return (scores.turn_taking.f1 + scores.barge_in.f1) / 2


def train_model(data: DuplexDataModule, setting: Setting) -> tuple[DuplexTask, list[tuple[float, float]]]:
    """The task trained for `setting.steps` AdamW steps (linear warm-up, cosine decay); the loss curve."""
    torch.manual_seed(setting.seed)
    task = DuplexTask(num_features=setting.num_mel_bins, dim=setting.dim, shift_weight=setting.shift_weight)
    optimizer = torch.optim.AdamW(task.parameters(), lr=setting.lr)
    warmup = max(1, setting.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + torch.cos(torch.tensor(torch.pi * min(s, setting.steps) / setting.steps)).item())
        ),
    )
    curve, step = [], 0
    task.train()
    while step < setting.steps:
        for batch in data.train_dataloader():
            loss = task.step(batch, "train")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            curve.append((float(step), loss.item()))
            step += 1
            if step >= setting.steps:
                break
    task.eval()
    return task, curve


def tune_vad(scripts: list[DialogueScript], setting: Setting) -> tuple[dict[str, float], float]:
    """Coordinate search: (energy threshold, timeout) with the speaking threshold 10 dB higher and a 2-block onset,
    then (speaking threshold, onset) at the best pair. Returns the best parameters and their objective."""
    best: dict[str, float] = {}
    best_score = -1.0
    for threshold, timeout in itertools.product(setting.vad_thresholds_db, setting.vad_timeouts):
        params = {"threshold_db": threshold, "timeout": timeout, "speaking_threshold_db": threshold + 10.0}
        params["onset_blocks"] = 2
        score = objective(evaluate(scripts, vad_policy(params)))
        if score > best_score:
            best, best_score = params, score
    for speaking, onset in itertools.product(setting.vad_speaking_db, setting.vad_onsets):
        params = best | {"speaking_threshold_db": speaking, "onset_blocks": onset}
        score = objective(evaluate(scripts, vad_policy(params)))
        if score > best_score:
            best, best_score = params, score
    return best, best_score


def _check(setting: Setting) -> ClaimResult:
    data = DuplexDataModule(
        num_train=setting.num_train,
        num_val=2,
        num_test=setting.num_test,
        clause_texts=setting.clause_texts,
        response_texts=setting.response_texts,
        num_mel_bins=setting.num_mel_bins,
        batch_size=setting.batch_size,
        seed=setting.seed,
    )
    data.prepare_data()
    data.setup("fit")
    started = time.perf_counter()
    task, curve = train_model(data, setting)
    train_seconds = time.perf_counter() - started
    tune = data.scripts("train")[: setting.tune_dialogues]
    test = data.scripts("test")

    tuning = {}
    for threshold in THRESHOLDS:
        tuning[threshold] = objective(evaluate(tune, ModelPolicy(task.model, threshold)))
    threshold = max(tuning, key=tuning.__getitem__)
    vad_params, vad_tuned = tune_vad(tune, setting)

    started = time.perf_counter()
    model_scores = evaluate(test, ModelPolicy(task.model, threshold))
    model_seconds = time.perf_counter() - started
    vad_scores = evaluate(test, vad_policy(vad_params))
    oracle_scores = evaluate(test, None)

    model, vad, oracle = model_scores.summary(), vad_scores.summary(), oracle_scores.summary()
    model |= {
        "shift threshold": threshold,
        "tuning objective": tuning[threshold],
        "train seconds": train_seconds,
        "closed-loop seconds (test, lockstep)": model_seconds,
        "parameters": float(task.num_parameters()),
    }
    vad |= {f"tuned {name}": float(value) for name, value in vad_params.items()} | {"tuning objective": vad_tuned}
    criteria = decide(model, vad)
    return ClaimResult(
        key="salmonn_omni",
        claim=(
            "A streaming model that reads the microphone and its own output per time block and emits <think>/<shift> "
            "state tokens takes turns and stops on barge-ins (with its own echo and noise in the microphone) better "
            "than an energy-VAD + silence-timeout pipeline."
        ),
        paper_reported=(
            "SALMONN-omni (arXiv:2411.18138) reports qualitatively that it manages turn-taking, barge-in and echo "
            "cancellation; the standalone version (arXiv:2505.17060) reports turn-taking / barge-in success rates "
            "above modular and codec-based full-duplex systems. No VAD-baseline F1 to compare with at this scale."
        ),
        decision_rule=(
            f"closed loop on {setting.num_test} held-out dialogues: model - VAD turn-taking F1 >= {MARGIN} and "
            f"model - VAD scripted barge-in F1 >= {MARGIN} (starts within {TAKE_TOLERANCE} s after a user turn "
            f"ends; stops within {STOP_TOLERANCE} s after a scripted barge-in begins while the model speaks, any "
            f"other stop a false alarm); each policy's parameters chosen on {setting.tune_dialogues} training "
            f"dialogues by mean(turn-taking F1, any-overlap barge-in F1). Note: {RULE_CHANGE}"
        ),
        method=model,
        baselines={"energy VAD + timeout": vad, "oracle (reference labels)": oracle}
        | {"model threshold tuning": {f"objective at {t}": v for t, v in tuning.items()}},
        criteria=criteria,
        curves={"DuplexStateModel": curve},
        plot={"xlabel": "step", "ylabel": "weighted token cross-entropy"},
        config=asdict(setting)
        | {"notes": RULE_CHANGE, "decided": list(DECIDED)}
        | {"margin": MARGIN, "thresholds": list(THRESHOLDS), "dialogue": asdict(data.config)},
    )
