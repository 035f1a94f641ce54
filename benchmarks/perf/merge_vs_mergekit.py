"""`paperzoo merge` against mergekit: merging 6 experts of ~100M parameters, wall time and peak RSS, same inputs.

Inputs (written once to a temporary directory, deleted at the end): a base and `--experts` fine-tunes in Hugging Face
Llama layout (`LlamaForCausalLM`: `config.json` + `model.safetensors`, float32, untied embeddings; shape `--shape`,
"full" = hidden 768, 12 layers, MLP 2048, vocabulary 8192: 97.5M parameters, 372 MiB per model), expert = base +
a small random task vector (`paperzoo.efficiency.merging.checks.merge_tool.write_experts`, which the `merge` card's
claim check also uses). mergekit reads these as a Llama model it knows; ours reads the same directories.

Merges, each by both tools on the same inputs, matched settings:
- ties: density 0.25 per tensor (ours: scope "tensor", mergekit's only scope), weights 1, lambda 1. Every tensor's
  size is a multiple of 4, so mergekit's int(d * n) and our round(d * n) ask for the same count k; mergekit elects +
  where the sum is exactly 0 and we elect 0 (not hit by these deltas). The outputs still differ where a task
  vector's magnitude ties with its k-th largest: ours keeps every tied entry (the TIES reference's `>=` rule),
  mergekit exactly k (argsort picks one). The deltas are differences of float32 numbers near 0.02, so such ties are
  common in the large tensors: on the full inputs (seed 0), lm_head.weight of 3 of the 6 experts keeps k + 1 entries
  in ours, and 5 of its 6,291,456 merged entries differ (max 8.2e-3: the extra entry flips the sign election),
  embed_tokens.weight has ties but no merged entry differs (checked in-process with mergekit's `merge_state_dicts`);
  the table's max abs diff for ties is that. tests/test_merging_peers.py shows the equality once no tie occurs;
- task_arithmetic: weights 1, lambda 1.
Ours is `paperzoo.efficiency.merging.run.run_merge` on a config (what `paperzoo merge --config` runs: validation
from headers, lazy inputs, `merge_iter` streamed into the safetensors writer, the card with SHA-256 of every input
file); mergekit's is its `mergekit-yaml` command (`mergekit.scripts.run_yaml.main`, options `--no-copy-tokenizer
--num-threads 1`; its lazy loader reads one tensor at a time too). Each merge runs in a fresh subprocess on one
torch thread (OMP_NUM_THREADS=1), `--rounds` interleaved rounds in alternating order, medians reported:
- wall s: the subprocess from start to exit (imports included); merge s: the merge call alone, in the process;
- peak RSS: the subprocess's ru_maxrss, read through a fresh small wrapper process (`merge_tool.measure`);
- merge peak increment: VmHWM after a reset at the start of the merge (/proc/self/clear_refs) minus the RSS then,
  i.e. what the merge itself held at its peak, imports excluded.
Ratios are ours / mergekit's (< 1: ours faster or smaller). Both outputs of a round are loaded and compared (max
absolute difference over all tensors), so the table shows the two did the same work.

    uv run --group peers python benchmarks/perf/merge_vs_mergekit.py [--shape full] [--experts 6] [--rounds 3]

mergekit is not in the peers group (`make peers` installs it with --no-deps plus `immutables`, `accelerate`,
`peft`). It prints a table and writes `benchmarks/perf/results/merge_vs_mergekit.json`, rendered by `paperzoo report`.
"""

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paperzoo.core.io import atomic_write_text
from paperzoo.efficiency.merging.checks.merge_tool import (
    FULL,
    MIB,
    QUICK,
    TINY,
    LlamaShape,
    Measured,
    measure,
    merge_spec,
    worker_argv,
    write_experts,
)
from paperzoo.efficiency.merging.io import LazyStateDict

SHAPES = {"full": FULL, "quick": QUICK, "tiny": TINY}
DENSITY = 0.25
METHODS = ("ties", "task_arithmetic")
OUT = Path("benchmarks/perf/results/merge_vs_mergekit.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="full")
    parser.add_argument("--experts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary input directory")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def ours_spec(root: Path, base: Path, experts: list[Path], method: str) -> Path:
    params: dict[str, Any] = {"density": DENSITY, "scope": "tensor"} if method == "ties" else {}
    spec = merge_spec(base, experts, root / f"ours_{method}.safetensors", method, params)
    path = root / f"ours_{method}.json"
    path.write_text(json.dumps(spec))
    return path


def mergekit_spec(root: Path, base: Path, experts: list[Path], method: str) -> Path:
    parameters: dict[str, Any] = {"weight": 1.0}
    if method == "ties":
        parameters["density"] = DENSITY
    config = {
        "merge_method": method,
        "base_model": str(base),
        "models": [{"model": str(p), "parameters": parameters} for p in experts],
        "parameters": {"lambda": 1.0},
        "dtype": "float32",
    }
    config_path = root / f"mergekit_{method}.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    spec = {
        "config": str(config_path),
        "output": str(root / f"mergekit_{method}"),
        "options": ["--no-copy-tokenizer", "--num-threads", "1", "--quiet"],
    }
    path = root / f"mergekit_{method}.json"
    path.write_text(json.dumps(spec))
    return path


def max_difference(ours: Path, theirs: Path) -> float:
    a, b = LazyStateDict(ours), LazyStateDict(theirs)
    if set(a) != set(b):
        raise RuntimeError(f"outputs hold different tensors: {sorted(set(a) ^ set(b))[:5]}")
    return max(float((a[name].float() - b[name].float()).abs().max()) for name in a)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shape: LlamaShape = SHAPES[args.shape]
    model_mib = shape.parameters * 4 / MIB
    print(f"{args.experts} experts + base, {shape.parameters:,} parameters each ({model_mib:.0f} MiB float32)")
    runs: dict[tuple[str, str], list[Measured]] = {}
    diffs: dict[str, list[float]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="merge-vs-mergekit-", dir=args.workdir) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        base, experts = write_experts(root / "models", shape, args.experts)
        print(f"inputs written in {time.perf_counter() - started:.0f} s to {root}")
        specs = {
            (impl, method): (ours_spec if impl == "paperzoo" else mergekit_spec)(root, base, experts, method)
            for impl in ("paperzoo", "mergekit")
            for method in args.methods
        }
        for round_index in range(args.rounds):
            for method in args.methods:
                order = ("paperzoo", "mergekit") if round_index % 2 == 0 else ("mergekit", "paperzoo")
                for impl in order:
                    mode = "streamed" if impl == "paperzoo" else "mergekit"
                    measured = measure(worker_argv(mode, specs[(impl, method)]))
                    runs.setdefault((impl, method), []).append(measured)
                    print(
                        f"round {round_index} {method:16s} {impl:9s} wall {measured.seconds:6.1f} s, merge "
                        f"{measured.report['seconds']:6.1f} s, peak {measured.peak_rss / MIB:7.0f} MiB, merge peak "
                        f"+{measured.increment / MIB:6.0f} MiB",
                        flush=True,
                    )
                ours_out, theirs_out = root / f"ours_{method}.safetensors", root / f"mergekit_{method}"
                diffs[method].append(max_difference(ours_out, theirs_out))
                ours_out.unlink()
                shutil.rmtree(theirs_out)
    rows = []
    figures: dict[tuple[str, str], dict[str, float]] = {}
    for (impl, method), measured in runs.items():
        figures[(impl, method)] = {
            "wall": statistics.median(m.seconds for m in measured),
            "merge": statistics.median(m.report["seconds"] for m in measured),
            "peak": statistics.median(m.peak_rss for m in measured) / MIB,
            "increment": statistics.median(m.increment for m in measured) / MIB,
            "spread": (max(m.seconds for m in measured) - min(m.seconds for m in measured))
            / statistics.median(m.seconds for m in measured),
        }
    for method in args.methods:
        ref = figures[("mergekit", method)]
        for impl in ("paperzoo", "mergekit"):
            f = figures[(impl, method)]
            rows.append(
                {
                    "implementation": "paperzoo merge" if impl == "paperzoo" else "mergekit-yaml",
                    "method": method,
                    "K": str(args.experts),
                    "wall s": f"{f['wall']:.1f}",
                    "merge s": f"{f['merge']:.1f}",
                    "peak RSS MiB": f"{f['peak']:.0f}",
                    "merge peak increment MiB": f"{f['increment']:.0f}",
                    "wall ratio": f"{f['wall'] / ref['wall']:.2f}x" if impl == "paperzoo" else "reference",
                    "merge time ratio": f"{f['merge'] / ref['merge']:.2f}x" if impl == "paperzoo" else "reference",
                    "peak RSS ratio": f"{f['peak'] / ref['peak']:.2f}x" if impl == "paperzoo" else "reference",
                    "increment ratio": f"{f['increment'] / ref['increment']:.2f}x"
                    if impl == "paperzoo"
                    else "reference",
                    "max abs diff": f"{max(diffs[method]):.1e}",
                }
            )
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))
    spread = max(f["spread"] for f in figures.values())
    record = {
        "title": f"paperzoo merge vs mergekit: {args.experts} experts of {shape.parameters / 1e6:.1f}M parameters",
        "device": "AMD EPYC, 1 thread",
        "command": "uv run --group peers python benchmarks/perf/merge_vs_mergekit.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "columns": columns,
        "rows": rows,
        "notes": (
            f"Base + {args.experts} experts in Hugging Face Llama layout (hidden {shape.hidden}, {shape.layers} "
            f"layers, MLP {shape.intermediate}, vocabulary {shape.vocab}; {shape.parameters:,} parameters, "
            f"{model_mib:.0f} MiB float32 each, largest tensor {shape.largest * 4 / MIB:.0f} MiB), on disk as "
            f"safetensors; ties: density {DENSITY} per tensor, weights 1, lambda 1 (ours scope 'tensor'); "
            "task_arithmetic: weights 1, lambda 1. Each merge a fresh subprocess on 1 torch thread; medians of "
            f"{args.rounds} interleaved rounds (alternating order; wall times of one implementation spread by up "
            f"to {spread:.0%}). wall s = process start to exit (imports included), merge s = the merge call alone; "
            "peak RSS = the process's ru_maxrss (imports included: paperzoo's import of paperzoo.core.io pulls in "
            "lightning); merge peak increment = VmHWM reset at the start of the merge minus the RSS then. Ratios "
            "ours / mergekit's (< 1: ours faster or smaller). Ours also hashes every input file (SHA-256) for the "
            "merge card. max abs diff = largest |ours - mergekit| over all tensors of the merged models "
            "(differences: module docstring)."
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
