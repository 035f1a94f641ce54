"""Claim check for DARE (CATALOG 93): "Language Models are Super Mario: Absorbing Abilities from Homologous Models
as a Free Lunch" (Yu et al., https://arxiv.org/abs/2311.03099).

Claim: dropping a fraction p of a fine-tuned model's delta parameters (theta_ft - theta_pre) at random and
rescaling the survivors by 1 / (1 - p) keeps the model's ability up to high p (0.9); the same drop without the
rescale, or applied to the fine-tuned weights themselves, collapses; and merging DARE'd experts (DARE + task
arithmetic, DARE + TIES) is at least as good as merging the originals.

Testbed: the merging testbed's text track (`testbed.text_testbed`): a byte-level core `GPT` pretrained on a mix of
three real corpora (Wikipedia sample, Python stdlib sources, WordNet glosses) and one full fine-tune per corpus.
Figure: next-byte top-1 accuracy on the expert's own corpus (fixed test windows). With the vision track
(`testbed.vision_testbed`, full mode only) the same table is repeated on image classification (the backbone with
each task's head), reported and decided the same way.

Per expert and p in {0.5, 0.9, 0.99} (quick: 0.9 only); DARE averaged over the seeds (full: 3, quick: 1), the two
baselines on the first seed:
- "dare": base + DARE(delta) (the engine's `dare_task_arithmetic` on one model, lambda 1);
- "no_rescale": the same mask without the 1 / (1 - p) rescale;
- "raw": the fine-tuned weights themselves dropped and rescaled (DARE with a zero base), the paper's Sec. 4.4.
Each as relative accuracy (acc / expert acc) and gain kept (acc - base acc) / (expert acc - base acc), the share
of the fine-tuning gain left; the base is the pretrained model on that corpus (vision: the base backbone with the
task's fine-tuned head).

Merging: task arithmetic, TIES (density 0.2, global trim), DARE + task arithmetic and DARE + TIES over all experts,
lambda_ chosen on the val split (`checks.common.tune_lambda`, shared with the other merging checks) and DARE's p on
val too from {0.5, 0.9} (the paper tunes p), both with the first DARE seed; scored by the mean normalized test
accuracy (merged / expert), for DARE averaged over the seeds at the chosen (p, lambda_).

Decision rule (fixed before the first full run; "collapse" = less than half of the fine-tuning gain left):
1. DARE at p = 0.9 keeps >= 95% of every expert's accuracy (the paper's claim) and >= 90% of its gain (stricter:
   on next-byte accuracy the base alone already reaches most of the expert's accuracy);
2. without the rescale at p = 0.9, every expert keeps < 50% of its gain (collapse);
3. dropping the raw weights at p = 0.9, every expert keeps < 50% of its gain (collapse);
4. DARE + task arithmetic >= task arithmetic - 0.005 and DARE + TIES >= TIES - 0.005 in mean normalized accuracy.
Full mode also fine-tunes the first corpus twice more from the base, with smaller deltas (0.1x the learning rate)
and larger ones (2x the steps at 5x the learning rate), and reports DARE's gain kept against p for each next to the
testbed expert (the paper: DARE needs small deltas, it fails after long training); reported, not decided.

Deviations: the tied embedding/head of the GPT are two entries of the state dict, dropped with independent masks;
the model loads `head.weight` last, so its draw is the one used. Scale: 0.3M-parameter models instead of 7B LLMs.

Full run (benchmarks/results/dare.json, 444 s, testbeds cached: text built in 391 s, vision in 566 s): FAIL on the
gain kept at p = 0.9, PASS on everything else. DARE at p = 0.9 keeps >= 95% of every expert's accuracy (text
0.950-0.961, vision 0.953-1.0), but on text that is the base's level: the gain kept is -0.11 to 0.26 (0.87-0.94 at
p = 0.5); on vision 0.82 (textures) to 1.0, >= 0.94 on five of six tasks. Without the rescale p = 0.9 keeps <= 0.20
(text) / 0.33 (vision) of the gain, the raw-weight drop falls far below the base (-1.4 to -24). Merging: DARE+TA vs
TA +0.001 (text) / -0.004 (vision), DARE+TIES vs TIES +0.004 / -0.002, with p = 0.5 chosen on val for all but vision
DARE+TIES. The delta sweep is the paper's small-delta condition: wikipedia fine-tuned at 0.1x the learning rate
(||delta|| / ||theta|| = 0.02) keeps 0.82 of its gain at p = 0.9 and 1.02 at p = 0.5; the testbed expert (0.12)
-0.005 and 0.87; the long-trained one (0.49) collapses already at p = 0.5 (-0.07).
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from paperzoo.core.card import MethodCard
from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.efficiency.merging.checks.common import LAMBDA_GRID, Testbed, evaluate, table, tune_lambda
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.task_vector import StateDict
from paperzoo.efficiency.merging.testbed import TextRecipe, VisionRecipe, text_testbed, vision_testbed

CARD = MethodCard(
    key="dare",
    number=93,
    title="Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free Lunch",
    arxiv="2311.03099",
    kind="posthoc",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.merging.sparsify:random_drop",
        "paperzoo.efficiency.merging.procedure:merge",
        "paperzoo.efficiency.merging.checks.dare:drop_variants",
    ),
    claim=(
        "Dropping 90% of a fine-tuned model's delta parameters at random and rescaling the rest by 1/(1-p) keeps its "
        "ability, while the same drop without the rescale or on the raw weights collapses, and merging DARE'd experts "
        "is at least as good as merging the originals."
    ),
    reference_code="https://github.com/yule-BUAA/MergeLM",
    check="paperzoo.efficiency.merging.checks.dare:check",
)

KEEP_ACCURACY = 0.95
KEEP_GAIN = 0.90
COLLAPSE_GAIN = 0.5
MERGE_MARGIN = 0.005
VARIANTS = ("dare", "no_rescale", "raw")


@dataclass(frozen=True)
class Setting:
    """One budget of the check."""

    text: TextRecipe
    vision: VisionRecipe | None = None
    drop_rates: tuple[float, ...] = (0.5, 0.9, 0.99)
    seeds: tuple[int, ...] = (0,)
    merge_drop_rates: tuple[float, ...] = (0.5, 0.9)
    lambda_grid: tuple[float, ...] = LAMBDA_GRID
    ties_density: float = 0.2
    # extra fine-tunes of the first text corpus from the base: (label, steps factor, learning-rate factor) on the
    # testbed recipe's fine-tuning steps and learning rate; their deltas are smaller or larger than the experts'
    delta_sweep: tuple[tuple[str, float, float], ...] = ()


QUICK = Setting(text=TextRecipe.quick(), drop_rates=(0.9,), lambda_grid=(0.5, 1.0), merge_drop_rates=(0.9,))
FULL = Setting(
    text=TextRecipe.full(),
    vision=VisionRecipe.full(),
    seeds=(0, 1, 2),
    lambda_grid=(0.1, 0.2, 0.3, 0.5, 0.7, 1.0),  # the first full run's grid from 0.2 had task arithmetic at 0.2
    delta_sweep=(("small-lr", 1.0, 0.1), ("long", 2.0, 5.0)),
)


def drop_variants(base: StateDict, expert: StateDict, p: float, seed: int = 0) -> dict[str, StateDict]:
    """The three drops of one expert at rate p: "dare" (delta dropped and rescaled), "no_rescale" (delta dropped),
    "raw" (the fine-tuned weights themselves dropped and rescaled)."""
    zeros = {name: torch.zeros_like(t) if t.is_floating_point() else t for name, t in base.items()}
    return {
        "dare": merge(base, [expert], "dare_task_arithmetic", drop_rate=p, rescale=True, lambda_=1.0, seed=seed),
        "no_rescale": merge(base, [expert], "dare_task_arithmetic", drop_rate=p, rescale=False, lambda_=1.0, seed=seed),
        "raw": merge(zeros, [expert], "dare_task_arithmetic", drop_rate=p, rescale=True, lambda_=1.0, seed=seed),
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def gain_kept(acc: float, base_acc: float, expert_acc: float) -> float:
    """(acc - base) / (expert - base): the share of the fine-tuning gain left; NaN when the expert gained nothing."""
    return (acc - base_acc) / (expert_acc - base_acc) if expert_acc != base_acc else float("nan")


def single_expert_table(
    testbed: Testbed, tasks: Sequence[str], drop_rates: Sequence[float], seeds: Sequence[int]
) -> dict[str, dict[str, float]]:
    """task -> {"base", "expert", "<variant> p=<p> acc|rel|gain"}: each expert's drops on its own task's test split
    (DARE averaged over `seeds`, the no-rescale and raw-weight baselines on the first seed)."""
    rows: dict[str, dict[str, float]] = {}
    for task in tasks:
        base_acc = float(testbed.accuracy(testbed.base, task))
        expert_acc = float(testbed.expert_accuracy[task])
        row = {"base": base_acc, "expert": expert_acc}
        for p in drop_rates:
            runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for index, seed in enumerate(seeds):
                for variant, state in drop_variants(testbed.base, testbed.experts[task], p, seed).items():
                    if variant == "dare" or index == 0:  # the collapsing baselines on the first seed only
                        runs[variant].append(float(testbed.accuracy(state, task)))
            for variant, values in runs.items():
                acc = _mean(values)
                row[f"{variant} p={p} acc"] = acc
                row[f"{variant} p={p} rel"] = acc / expert_acc
                row[f"{variant} p={p} gain"] = gain_kept(acc, base_acc, expert_acc)
        rows[task] = row
    return rows


def merge_table(testbed: Testbed, tasks: Sequence[str], setting: Setting) -> dict[str, dict[str, float]]:
    """method -> {"norm", "acc", "lambda", "p", "spread"}: all experts merged, lambda (and p) tuned on val."""
    base, experts = testbed.base, [testbed.experts[t] for t in tasks]
    grid = setting.lambda_grid
    rows: dict[str, dict[str, float]] = {}
    plain: dict[str, Callable[[float], StateDict]] = {
        "task_arithmetic": lambda lam: merge(base, experts, "task_arithmetic", lambda_=lam),
        "ties": lambda lam: merge(base, experts, "ties", lambda_=lam, density=setting.ties_density),
    }
    for name, build_plain in plain.items():
        tuned = tune_lambda(testbed, tasks, build_plain, grid)
        rows[name] = {
            "norm": tuned.test.mean_normalized,
            "acc": tuned.test.mean_accuracy,
            "lambda": float(tuned.lambda_ or 0.0),
            "p": 0.0,
            "spread": 0.0,
        }
    for name in ("dare_task_arithmetic", "dare_ties"):

        def build(lam: float, p: float, seed: int, name: str = name) -> StateDict:
            return merge(base, experts, name, lambda_=lam, drop_rate=p, seed=seed)

        # (p, lambda) chosen on val with the first seed; every seed is then scored on test at that choice
        best = None
        for p in setting.merge_drop_rates:
            tuned = tune_lambda(testbed, tasks, lambda lam, p=p: build(lam, p, setting.seeds[0]), grid)
            if best is None or tuned.val.mean_normalized > best[1].val.mean_normalized:
                best = (p, tuned)
        assert best is not None
        p, tuned = best
        lam = float(tuned.lambda_ or 0.0)
        scores = [tuned.test] + [evaluate(testbed, build(lam, p, s), tasks) for s in setting.seeds[1:]]
        norms = [s.mean_normalized for s in scores]
        rows[name] = {
            "norm": _mean(norms),
            "acc": _mean([s.mean_accuracy for s in scores]),
            "lambda": lam,
            "p": p,
            "spread": max(norms) - min(norms),
        }
    return rows


def finetune_variant(testbed: Any, corpus: str, steps_factor: float, lr_factor: float) -> StateDict:
    """`corpus` fine-tuned from the text testbed's base for steps_factor x the recipe's fine-tuning steps at lr_factor x
    its learning rate (the testbed's AdamW loop, cosine schedule and batch shape)."""
    import torch.nn.functional as F

    from paperzoo.efficiency.merging.testbed import load_corpus
    from paperzoo.efficiency.merging.testbed.build import train_loop

    recipe = testbed.recipe
    tokens = load_corpus(corpus, "train")
    model = testbed.model(testbed.base).train()
    generator = torch.Generator().manual_seed(recipe.seed + 7)
    steps = max(1, round(recipe.finetune_steps * steps_factor))

    def loss(step: int) -> torch.Tensor:
        starts = torch.randint(len(tokens) - recipe.seq_len - 1, (recipe.batch_size,), generator=generator)
        batch = torch.stack([tokens[s : s + recipe.seq_len + 1] for s in starts.tolist()])  # [B, T + 1]
        logits = model(batch[:, :-1])  # [B, T, V]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    train_loop(list(model.parameters()), loss, steps, recipe.lr * lr_factor, warmup=max(1, steps // 10))
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}


def relative_delta_norm(base: Mapping[str, torch.Tensor], expert: Mapping[str, torch.Tensor]) -> float:
    """||theta_ft - theta_pre|| / ||theta_pre|| over the floating-point tensors."""
    num = sum(float((expert[n].float() - t.float()).pow(2).sum()) for n, t in base.items() if t.is_floating_point())
    den = sum(float(t.float().pow(2).sum()) for t in base.values() if t.is_floating_point())
    return (num / max(den, 1e-30)) ** 0.5


def _track_criteria(track: str, rows: dict[str, dict[str, float]], merged: dict[str, dict[str, float]]) -> list:
    at = 0.9
    return [
        Criterion(
            f"{track}: min over experts of DARE p=0.9 relative accuracy",
            min(r[f"dare p={at} rel"] for r in rows.values()),
            ">=",
            KEEP_ACCURACY,
        ),
        Criterion(
            f"{track}: min over experts of DARE p=0.9 gain kept",
            min(r[f"dare p={at} gain"] for r in rows.values()),
            ">=",
            KEEP_GAIN,
        ),
        Criterion(
            f"{track}: max over experts of no-rescale p=0.9 gain kept",
            max(r[f"no_rescale p={at} gain"] for r in rows.values()),
            "<=",
            COLLAPSE_GAIN,
        ),
        Criterion(
            f"{track}: max over experts of raw-weight drop p=0.9 gain kept",
            max(r[f"raw p={at} gain"] for r in rows.values()),
            "<=",
            COLLAPSE_GAIN,
        ),
        Criterion(
            f"{track}: DARE+TA minus TA, mean normalized accuracy",
            merged["dare_task_arithmetic"]["norm"] - merged["task_arithmetic"]["norm"],
            ">=",
            -MERGE_MARGIN,
        ),
        Criterion(
            f"{track}: DARE+TIES minus TIES, mean normalized accuracy",
            merged["dare_ties"]["norm"] - merged["ties"]["norm"],
            ">=",
            -MERGE_MARGIN,
        ),
    ]


def _flatten(prefix: str, rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{prefix} {name} {key}": value for name, row in rows.items() for key, value in row.items()}


def testbed_tracks(text: TextRecipe, vision: VisionRecipe | None, progress: bool) -> list[tuple[str, Any]]:
    """("text", its testbed) and, when `vision` is given, ("vision", its testbed): what DARE and ComPEFT run on."""
    tracks: list[tuple[str, Any]] = [("text", text_testbed(text, progress=progress))]
    if vision is not None:
        tracks.append(("vision", vision_testbed(vision, progress=progress)))
    return tracks


def run(setting: Setting, progress: bool = False) -> ClaimResult:
    """The check at `setting` (see the module docstring)."""
    start = time.perf_counter()
    method: dict[str, float] = {}
    baselines: dict[str, dict[str, float]] = {}
    criteria: list[Criterion] = []
    curves: dict[str, list[tuple[float, float]]] = {}
    config: dict[str, Any] = {"setting": asdict(setting)}
    tracks = testbed_tracks(setting.text, setting.vision, progress)
    for track, testbed in tracks:
        config[f"{track} build_seconds"] = testbed.build_seconds
        tasks = tuple(testbed.experts)
        rows = single_expert_table(testbed, tasks, setting.drop_rates, setting.seeds)
        merged = merge_table(testbed, tasks, setting)
        for task, row in rows.items():
            for variant in VARIANTS:
                curves[f"{track} {task} {variant}"] = [(p, row[f"{variant} p={p} gain"]) for p in setting.drop_rates]
        dare_rows = {t: {k: v for k, v in r.items() if k.startswith("dare")} for t, r in rows.items()}
        method |= _flatten(track, dare_rows)
        method |= _flatten(f"{track} merge", {k: v for k, v in merged.items() if k.startswith("dare")})
        for variant in ("no_rescale", "raw"):
            baselines[f"{track} {variant}"] = _flatten(
                track, {t: {k: v for k, v in r.items() if k.startswith(variant)} for t, r in rows.items()}
            )
        baselines[f"{track} base and experts"] = _flatten(
            track, {t: {"base": r["base"], "expert": r["expert"]} for t, r in rows.items()}
        )
        baselines[f"{track} merge"] = _flatten(track, {k: v for k, v in merged.items() if not k.startswith("dare")})
        criteria += _track_criteria(track, rows, merged)
        config[f"{track} table"] = table(
            {
                f"{t} {v}": {f"p={p}": r[f"{v} p={p} gain"] for p in setting.drop_rates}
                for t, r in rows.items()
                for v in VARIANTS
            }
        )
        config[f"{track} merge table"] = table(merged)
        if track == "text":
            corpus = tasks[0]
            variants = [("testbed", testbed.experts[corpus], 0.0)]
            for label, steps_factor, lr_factor in setting.delta_sweep:
                t0 = time.perf_counter()
                variants.append((label, finetune_variant(testbed, corpus, steps_factor, lr_factor), t0))
            for label, expert, t0 in variants if setting.delta_sweep else []:
                base_acc, acc = rows[corpus]["base"], float(testbed.accuracy(expert, corpus))
                figures = {
                    "expert acc": acc,
                    "gain": acc - base_acc,
                    "delta norm / base norm": relative_delta_norm(testbed.base, expert),
                    "train seconds": time.perf_counter() - t0 if t0 else 0.0,
                }
                for p in setting.drop_rates:
                    accs = [
                        float(testbed.accuracy(drop_variants(testbed.base, expert, p, s)["dare"], corpus))
                        for s in setting.seeds
                    ]
                    figures[f"dare p={p} rel"] = _mean(accs) / acc
                    figures[f"dare p={p} gain"] = gain_kept(_mean(accs), base_acc, acc)
                baselines[f"text {corpus} delta sweep: {label} expert"] = figures
                curves[f"text {corpus} {label} expert dare"] = [
                    (p, figures[f"dare p={p} gain"]) for p in setting.drop_rates
                ]
    return ClaimResult(
        key="dare",
        claim=CARD.claim,
        paper_reported=(
            "WizardLM/WizardMath/Code Alpaca (7-13B) keep their scores with 90% (up to 99%) of delta parameters "
            "dropped and rescaled; without the rescale or on raw fine-tuned weights performance collapses; DARE "
            "before task arithmetic/TIES merging matches or improves the merged model (e.g. WizardLM+WizardMath "
            "GSM8K 64.2 -> 66.3)."
        ),
        decision_rule=(
            f"per track: DARE p=0.9 min relative accuracy >= {KEEP_ACCURACY} and min gain kept >= {KEEP_GAIN}; "
            f"no-rescale and raw-weight drops at p=0.9 keep < {COLLAPSE_GAIN} of the gain (collapse); DARE+TA >= TA "
            f"- {MERGE_MARGIN} and DARE+TIES >= TIES - {MERGE_MARGIN} (mean normalized test accuracy, lambda and p "
            "tuned on val)."
        ),
        method=method,
        baselines=baselines,
        criteria=criteria,
        curves=curves,
        plot={"xlabel": "drop rate p", "ylabel": "share of the fine-tuning gain kept"},
        quick=setting is QUICK,
        config=config,
        runtime_s=time.perf_counter() - start,
    )


def check(quick: bool = False) -> ClaimResult:
    """DARE's claim on the merging testbed (quick: the quick text testbed, one seed; full: text and vision)."""
    with torch_threads(1):
        return run(QUICK if quick else FULL)
