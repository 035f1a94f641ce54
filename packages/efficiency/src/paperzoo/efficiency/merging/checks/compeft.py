"""Claim check for ComPEFT (CATALOG 109): "ComPEFT: Compression for Communicating Parameter Efficient Updates via
Sparsification and Quantization" (Yadav et al., https://arxiv.org/abs/2311.13171).

Claim: a task vector compressed to its top-k% signs times one scale alpha * sigma(tau) is 8-50x smaller on disk
with a small loss, and the compressed experts still merge (TIES) about as well as the originals.

Testbed: the merging testbed's text track (a byte-level core `GPT` pretrained on three real corpora, one full
fine-tune per corpus; next-byte top-1 accuracy on the expert's own corpus). Full mode repeats the tables on the
vision track (image classification, the backbone with each task's head).

Per expert and k in {5, 10, 20}% (quick: 10% only; global top-k and sigma, as the reference code):
- "compeft": `compeft_compress`, alpha chosen on the expert's val split from `ALPHAS` (the reference tunes its
  replace_factor on validation data), written with `save_compeft`; its bytes on disk are measured.
- "topk": sparsify-only, the top-k deltas kept as they are (the reference's "just pruning").
Plus naive per-tensor absmax quantization of the task vector to int8, int4 and int2 (bytes = packed codes + one
float32 scale per tensor; int2 is the closest uniform quantizer to ComPEFT's ~0.3-1.2 bits per parameter).
Figures: gain kept (acc - base acc) / (expert acc - base acc) and relative accuracy on the test split; compression
ratio = bytes of the task vector as a dense fp32 (or fp16) safetensors file / bytes of the ComPEFT file (both
measured on disk, headers included). On the GPT the tied head is stored once (as `embed.weight`).

Merging: TIES (density 0.2, lambda_ tuned on val) over the original experts vs over the ComPEFT experts at each k
(mean normalized test accuracy, merged / expert).

Decision rule (fixed before the first full run), per track:
1. compression: the largest fp32 compression ratio among the k at which every expert keeps >= 95% of its
   fine-tuning gain is >= 8 (0 if no k qualifies);
2. merging: TIES over the ComPEFT experts at k = 10% >= TIES over the originals - 0.01 (mean normalized accuracy).
Deviations: full fine-tunes of 0.3M-parameter models instead of (Q)LoRA/IA3 adapters of T5/LLaMA; one base size.

Full run (benchmarks/results/compeft.json, 311 s, testbeds cached: text built in 391 s, vision in 566 s): FAIL on
compression, PASS on merging. On disk ComPEFT is 29-33x (k=20%), 44-53x (k=10%) and 71-93x (k=5%) smaller than
the dense fp32 task vector (0.6-0.7 bits per parameter at 10%, header included). Relative accuracy stays >= 0.95
at k=10% for every expert, but the share of the fine-tuning gain kept does not reach 0.95 at any k for every expert:
text 0.42-0.81 (10%) and 0.69-0.92 (20%); vision 0.67-0.99 (10%) and 0.98-1.06 (20%) on five tasks, lfw_faces stuck
at 0.67 (its 40 test images: one image is a third of its gain). Ternary ComPEFT beats sparsify-only at every k;
int4 (8x) keeps 0.93-1.08, int2 (16x) -0.06-0.47. TIES of the ComPEFT experts at 10% is within 0.002 (text) and
0.004 (vision) of TIES of the originals.
"""

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from paperzoo.core.card import MethodCard
from paperzoo.core.checks import ClaimResult, Criterion, torch_threads
from paperzoo.efficiency.merging.checks.common import Testbed, table, tune_lambda
from paperzoo.efficiency.merging.checks.dare import gain_kept, testbed_tracks
from paperzoo.efficiency.merging.compeft import (
    CompressedTaskVector,
    compeft_compress,
    quantize_absmax,
    save_compeft,
    topk_task_vector,
)
from paperzoo.efficiency.merging.io import save_safetensors
from paperzoo.efficiency.merging.procedure import merge
from paperzoo.efficiency.merging.task_vector import StateDict, task_vector
from paperzoo.efficiency.merging.testbed import TextRecipe, VisionRecipe

CARD = MethodCard(
    key="compeft",
    number=109,
    title=("ComPEFT: Compression for Communicating Parameter Efficient Updates via Sparsification and Quantization"),
    arxiv="2311.13171",
    kind="posthoc",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.merging.compeft:compeft_compress",
        "paperzoo.efficiency.merging.compeft:CompressedTaskVector",
        "paperzoo.efficiency.merging.compeft:save_compeft",
        "paperzoo.efficiency.merging.compeft:load_compeft",
        "paperzoo.efficiency.merging.compeft:topk_task_vector",
        "paperzoo.efficiency.merging.compeft:quantize_absmax",
    ),
    claim=(
        "Keeping the top-k% of a task vector as signs times one scale alpha * sigma makes it 8-50x smaller with a "
        "small loss, and the compressed experts still merge about as well as the originals."
    ),
    reference_code="https://github.com/prateeky2806/ComPEFT",
    check="paperzoo.efficiency.merging.checks.compeft:check",
)

# The first full run's grid (0.5-6) put alpha at its top (6) for half the experts: sigma is over the whole task vector,
# and the kept top-k entries sit many sigmas out, so the grid reaches 16.
ALPHAS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 16.0)
KEEP_GAIN = 0.95
MIN_RATIO = 8.0
MERGE_MARGIN = 0.01
MERGE_DENSITY = 0.1
QUANT_BITS = (8, 4, 2)
# The GPT ties its head to its embedding: both names are in the state dict, one parameter in the model.
TIED = {"head.weight": "embed.weight"}


@dataclass(frozen=True)
class Setting:
    """One budget of the check."""

    text: TextRecipe
    vision: VisionRecipe | None = None
    densities: tuple[float, ...] = (0.05, 0.1, 0.2)
    alphas: tuple[float, ...] = ALPHAS
    lambda_grid: tuple[float, ...] = (0.2, 0.3, 0.5, 0.7, 1.0, 1.5)  # TIES peaked at 0.3-0.5 here
    ties_density: float = 0.2


QUICK = Setting(text=TextRecipe.quick(), densities=(0.1,), alphas=(1.0, 2.0, 4.0), lambda_grid=(1.0,))
FULL = Setting(text=TextRecipe.full(), vision=VisionRecipe.full())


def _tied(base: Mapping[str, torch.Tensor]) -> dict[str, str]:
    return {copy: source for copy, source in TIED.items() if copy in base and source in base}


def _retie(state: StateDict, tied: Mapping[str, str]) -> StateDict:
    for copy, source in tied.items():
        state[copy] = state[source]
    return state


def compressed_state(base: StateDict, compressed: CompressedTaskVector) -> StateDict:
    """base + tau_hat, with tied copies following their source tensor."""
    return _retie(compressed.apply(base), _tied(base))


def dense_file_bytes(base: StateDict, expert: StateDict, dtype: torch.dtype, directory: Path) -> int:
    """Bytes on disk of the task vector as a dense safetensors file in `dtype` (tied copies stored once)."""
    tied = _tied(base)
    tau = {
        n: task_vector(t, expert[n], n).to(dtype) for n, t in base.items() if t.is_floating_point() and n not in tied
    }
    return save_safetensors(tau, directory / f"dense-{dtype}.safetensors".replace("torch.", ""), {})


def quantized_state(base: StateDict, expert: StateDict, bits: int) -> tuple[StateDict, int]:
    """base + absmax-quantized tau at `bits` bits, and its bytes (packed codes + one float32 scale per tensor)."""
    tied = _tied(base)
    out: StateDict = {}
    size = 0
    for name, tensor in base.items():
        if not tensor.is_floating_point() or name in tied:
            out[name] = tensor.clone()
            continue
        tau = task_vector(tensor, expert[name], name)
        out[name] = (tensor.float() + quantize_absmax(tau, bits)).to(tensor.dtype)
        size += (tau.numel() * bits + 7) // 8 + 4
    return _retie(out, tied), size


def expert_table(
    testbed: Testbed, tasks: Sequence[str], setting: Setting, directory: Path
) -> tuple[dict[str, dict[str, float]], dict[str, dict[float, CompressedTaskVector]]]:
    """task -> figures of every variant; and task -> k -> the ComPEFT task vector at its tuned alpha."""
    rows: dict[str, dict[str, float]] = {}
    chosen: dict[str, dict[float, CompressedTaskVector]] = {}
    for task in tasks:
        base, expert = testbed.base, testbed.experts[task]
        tied = tuple(_tied(base))
        base_acc, expert_acc = float(testbed.accuracy(base, task)), float(testbed.expert_accuracy[task])
        fp32 = dense_file_bytes(base, expert, torch.float32, directory)
        fp16 = dense_file_bytes(base, expert, torch.float16, directory)
        row = {"base acc": base_acc, "expert acc": expert_acc, "fp32 bytes": fp32, "fp16 bytes": fp16}
        chosen[task] = {}
        for k in setting.densities:
            unit = compeft_compress(base, expert, density=k, alpha=1.0, exclude=tied)
            val = {
                a: float(testbed.accuracy(compressed_state(base, unit.with_alpha(a)), task, "val"))
                for a in setting.alphas
            }
            alpha = max(setting.alphas, key=lambda a: (val[a], -a))  # first best: the smaller alpha on ties
            best = unit.with_alpha(alpha)
            chosen[task][k] = best
            acc = float(testbed.accuracy(compressed_state(base, best), task))
            size = save_compeft(best, directory / f"{task}-{k}.safetensors")
            row |= {
                f"compeft k={k} acc": acc,
                f"compeft k={k} gain": gain_kept(acc, base_acc, expert_acc),
                f"compeft k={k} rel": acc / expert_acc,
                f"compeft k={k} alpha": alpha,
                f"compeft k={k} bytes": size,
                f"compeft k={k} ratio fp32": fp32 / size,
                f"compeft k={k} ratio fp16": fp16 / size,
                f"compeft k={k} bits/param": 8 * size / sum(t.signs.numel() for t in best.tensors.values()),
            }
            sparse = _retie(topk_task_vector(base, expert, density=k, exclude=tied), _tied(base))
            acc = float(testbed.accuracy(sparse, task))
            row |= {f"topk k={k} acc": acc, f"topk k={k} gain": gain_kept(acc, base_acc, expert_acc)}
        for bits in QUANT_BITS:
            state, size = quantized_state(base, expert, bits)
            acc = float(testbed.accuracy(state, task))
            row |= {
                f"int{bits} acc": acc,
                f"int{bits} gain": gain_kept(acc, base_acc, expert_acc),
                f"int{bits} bytes": size,
                f"int{bits} ratio fp32": fp32 / size,
            }
        rows[task] = row
    return rows, chosen


def merge_rows(
    testbed: Testbed, tasks: Sequence[str], setting: Setting, chosen: Mapping[str, Mapping[float, CompressedTaskVector]]
) -> dict[str, dict[str, float]]:
    """ "ties original" and "ties compeft k=..." -> mean normalized / absolute test accuracy and the tuned lambda."""
    base = testbed.base
    sets = {"ties original": [testbed.experts[t] for t in tasks]}
    for k in setting.densities:
        sets[f"ties compeft k={k}"] = [compressed_state(base, chosen[t][k]) for t in tasks]
    rows = {}
    for name, models in sets.items():
        tuned = tune_lambda(
            testbed,
            tasks,
            lambda lam, models=models: merge(base, models, "ties", lambda_=lam, density=setting.ties_density),
            setting.lambda_grid,
        )
        rows[name] = {
            "norm": tuned.test.mean_normalized,
            "acc": tuned.test.mean_accuracy,
            "lambda": float(tuned.lambda_ or 0.0),
        }
    return rows


def best_ratio(rows: Mapping[str, Mapping[str, float]], densities: Sequence[float]) -> tuple[float, float | None]:
    """(the largest fp32 ratio among the k at which every expert keeps >= KEEP_GAIN of its gain, that k); (0, None)
    if no k qualifies. The ratio is the smallest over the experts at that k."""
    best: tuple[float, float | None] = (0.0, None)
    for k in densities:
        if all(r[f"compeft k={k} gain"] >= KEEP_GAIN for r in rows.values()):
            ratio = min(r[f"compeft k={k} ratio fp32"] for r in rows.values())
            if ratio > best[0]:
                best = (ratio, k)
    return best


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
        with tempfile.TemporaryDirectory(prefix="compeft-check-") as tmp:
            rows, chosen = expert_table(testbed, tasks, setting, Path(tmp))
        merged = merge_rows(testbed, tasks, setting, chosen)
        for task, row in rows.items():
            for key, value in row.items():
                target = method if key.startswith("compeft") else baselines.setdefault(f"{track} {task}", {})
                target[f"{track} {task} {key}" if target is method else key] = value
            curves[f"{track} {task} compeft"] = [
                (row[f"compeft k={k} ratio fp32"], row[f"compeft k={k} gain"]) for k in setting.densities
            ]
            curves[f"{track} {task} int"] = [(row[f"int{b} ratio fp32"], row[f"int{b} gain"]) for b in QUANT_BITS]
        for name, row in merged.items():
            target = method if "compeft" in name else baselines.setdefault(f"{track} merge", {})
            target |= {f"{track} {name} {key}": value for key, value in row.items()}
        ratio, at = best_ratio(rows, setting.densities)
        method[f"{track} best qualifying ratio fp32"] = ratio
        method[f"{track} best qualifying k"] = at or 0.0
        k = MERGE_DENSITY if MERGE_DENSITY in setting.densities else setting.densities[0]
        criteria += [
            Criterion(
                f"{track}: largest fp32 compression ratio keeping >= {KEEP_GAIN} of every expert's gain",
                ratio,
                ">=",
                MIN_RATIO,
            ),
            Criterion(
                f"{track}: TIES of ComPEFT experts (k={k}) minus TIES of originals, mean normalized accuracy",
                merged[f"ties compeft k={k}"]["norm"] - merged["ties original"]["norm"],
                ">=",
                -MERGE_MARGIN,
            ),
        ]
        columns = [f"compeft k={k} gain" for k in setting.densities] + [f"topk k={k} gain" for k in setting.densities]
        columns += [f"int{b} gain" for b in QUANT_BITS] + [f"compeft k={k} ratio fp32" for k in setting.densities]
        config[f"{track} table"] = table(rows, columns)
        config[f"{track} merge table"] = table(merged)
    return ClaimResult(
        key="compeft",
        claim=CARD.claim,
        paper_reported=(
            "T5/T0/LLaMA (IA3, LoRA, full fine-tunes): 8x-50x compression with performance within about a point of "
            "the uncompressed model, often better (e.g. +4.16% on MMLU for LLaMA-65B QLoRA at 26x); larger models "
            "compress better; ComPEFT'd PEFT modules merge with TIES at the uncompressed modules' performance."
        ),
        decision_rule=(
            f"per track: the largest fp32 on-disk compression ratio over k in {list(setting.densities)} at which "
            f"every expert keeps >= {KEEP_GAIN} of its gain is >= {MIN_RATIO}; TIES of ComPEFT experts at k=0.1 >= "
            f"TIES of originals - {MERGE_MARGIN} (mean normalized test accuracy, alpha and lambda tuned on val)."
        ),
        method=method,
        baselines=baselines,
        criteria=criteria,
        curves=curves,
        plot={
            "xlabel": "compression ratio vs dense fp32",
            "ylabel": "share of the fine-tuning gain kept",
            "xscale": "log",
        },
        quick=setting is QUICK,
        config=config,
        runtime_s=time.perf_counter() - start,
    )


def check(quick: bool = False) -> ClaimResult:
    """ComPEFT's claim on the merging testbed (quick: the quick text testbed; full: text and vision)."""
    with torch_threads(1):
        return run(QUICK if quick else FULL)
