"""Claim check of the merge tool (`paperzoo merge`, card key "merge"): merging K models streams tensor by tensor.

Claim: the tool's peak resident memory stays near K x the largest tensor plus the output writer, not K x the model.

Setup (one run, the same inputs for every variant): a base and 6 "experts" in Hugging Face Llama layout (random
float32 weights; expert = base + a small random task vector), written to a temporary directory as `model.safetensors`
+ `config.json` (`write_experts`; the same inputs serve the mergekit benchmark,
`benchmarks/perf/merge_vs_mergekit.py`). For K = 2, 4, 6 two subprocesses merge the base and the first K experts
with TIES (global scope, density 0.2, the paper's setting and the heavier one: one extra streamed pass for the
thresholds):
- streamed: the tool itself (`run.run_merge` on a config: lazy inputs, `merge_iter` into the streaming writer);
- eager: the baseline a script would write: `safetensors.torch.load_file` every checkpoint whole, `procedure.merge`
  on the in-memory dicts, `safetensors.torch.save_file` the merged dict.
Each subprocess runs on one torch thread (`measure`). Its whole-life peak RSS (ru_maxrss, read through a fresh small
wrapper process, so the caller's RSS does not leak in through vfork) is reported, but imports dominate it (~0.9 GiB:
torch, and lightning through `paperzoo.core.io`, with a transient peak while importing). The figure decided on is the
merge's own: the worker resets its peak (VmHWM, /proc/self/clear_refs) after its imports, before any weight is read,
and reports the peak from then to the end of the merge; the increment is that peak minus the RSS at the reset.

Decision rule (fixed before the first run), for every K:
- streamed increment <= (3K + 6) x the largest tensor's bytes + 64 MiB: the engine's working set for one tensor is the
  K inputs, their K float32 deltas and K trimmed deltas, plus base, merged and a few masks and temporaries; the 64 MiB
  cover the allocator and the writer's buffers. It does not grow with the model's size, only with its largest tensor;
- streamed merge peak < eager merge peak (the peak RSS from the start of the merge on; both workers import the same
  modules first, so their post-import RSS is the same);
- and, so that the baseline is what it claims to be, the eager increment >= K x the model's bytes;
- both wrote the same merge: max |streamed - eager| over all tensors <= 1e-6.
The streamed increment / model bytes and both runs' seconds are reported too.

Quick mode: a ~20M-parameter model (78 MiB in float32); full mode: ~98M parameters (372 MiB), the benchmark's size.

Full result (benchmarks/results/merge.json, 286 s on the shared 2-core machine, 1 thread): PASS. The streamed
increment is 192 / 303 / 423 MiB at K = 2 / 4 / 6 (8.0 / 12.6 / 17.6 times the 24 MiB largest tensor, about (K + 2)
tensors plus ~50-230 MiB; 0.5 / 0.8 / 1.1 times the 372 MiB model); the eager baseline's is 1678 / 2520 / 3362 MiB
(4.5 / 6.8 / 9.0 times the model); both write identical tensors. That is since the engine merges each tensor in flat
chunks of 2^20 entries (`procedure.CHUNK`). The first full run, before chunking, failed: 554 / 854 / 1377 MiB (23 /
36 / 57 largest tensors), because the per-tensor combine held the stacked (K, n) float32 deltas, their trimmed
copies and the election's temporaries (12 / 18 / 21.5 tensors at K = 6, measured step by step).
"""

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # the workers import nothing of paperzoo at the top, so mergekit's is measured without it
    from paperzoo.core.checks import ClaimResult

MIB = 1 << 20
DENSITY = 0.2
COUNTS = (2, 4, 6)


@dataclass(frozen=True)
class LlamaShape:
    """The tensor shapes of a Hugging Face `LlamaForCausalLM` (untied embeddings), so mergekit can read it too."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int

    def tensors(self) -> dict[str, tuple[int, ...]]:
        h, i = self.hidden, self.intermediate
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, h)}
        for layer in range(self.layers):
            prefix = f"model.layers.{layer}"
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                shapes[f"{prefix}.self_attn.{proj}.weight"] = (h, h)
            shapes[f"{prefix}.mlp.gate_proj.weight"] = (i, h)
            shapes[f"{prefix}.mlp.up_proj.weight"] = (i, h)
            shapes[f"{prefix}.mlp.down_proj.weight"] = (h, i)
            shapes[f"{prefix}.input_layernorm.weight"] = (h,)
            shapes[f"{prefix}.post_attention_layernorm.weight"] = (h,)
        shapes["model.norm.weight"] = (h,)
        shapes["lm_head.weight"] = (self.vocab, h)
        return shapes

    @property
    def parameters(self) -> int:
        return sum(math.prod(s) for s in self.tensors().values())

    @property
    def largest(self) -> int:
        """Entries of the largest tensor."""
        return max(math.prod(s) for s in self.tensors().values())

    def config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
        }


TINY = LlamaShape(hidden=32, layers=2, intermediate=64, vocab=128, heads=4)  # tests: 33k parameters
QUICK = LlamaShape(hidden=384, layers=8, intermediate=1024, vocab=8192, heads=6)  # 20.5M parameters
FULL = LlamaShape(hidden=768, layers=12, intermediate=2048, vocab=8192, heads=12)  # 97.5M parameters


def _generator(seed: int, model: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}\0{model}\0{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _weights(shape: LlamaShape, index: int, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of model `index` (0: base, i > 0: base + a task vector), one at a time."""
    for name, dims in shape.tensors().items():
        base = 0.02 * torch.randn(dims, generator=_generator(seed, 0, name))  # float32
        if index:
            base += 0.002 * torch.randn(dims, generator=_generator(seed, index, name))
        yield name, base


def write_experts(directory: Path, shape: LlamaShape, count: int, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write base and `count` experts as Hugging Face Llama directories under `directory`; returns their paths.

    Each file is streamed (`io.save_safetensors_stream`), so writing never holds a whole model.
    """
    from paperzoo.efficiency.merging.io import save_safetensors_stream

    layout = {name: (dims, torch.float32) for name, dims in shape.tensors().items()}
    paths = []
    for index in range(count + 1):
        path = directory / ("base" if index == 0 else f"expert_{index}")
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(shape.config(), indent=2))
        save_safetensors_stream(layout, _weights(shape, index, seed), path / "model.safetensors", {"format": "pt"})
        paths.append(path)
    return paths[0], paths[1:]


# --- measuring a subprocess -----------------------------------------------------------------------------------------
WORKER_TAG = "PAPERZOO_WORKER "
RUSAGE_TAG = "PAPERZOO_RUSAGE "
# A fresh, small process (no site, no torch) that forks the command and reports the command's rusage. Measuring
# through it, not by waiting on the command directly, keeps the caller's RSS out of the figure: Linux records the
# memory a process had before exec in its ru_maxrss, and subprocess starts children with vfork from the caller.
_WRAPPER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
print("PAPERZOO_RUSAGE " + json.dumps({"maxrss_kib": usage.ru_maxrss, "code": code}), flush=True)
sys.exit(code)
"""


@dataclass(frozen=True)
class Measured:
    """One measured command.

    seconds: its wall time, start to exit (imports included); `report` "seconds" is the merge alone.
    peak_rss: its peak RSS over its whole life (ru_maxrss through a fresh wrapper process), bytes.
    start_rss: its RSS after its imports, before any weight was read (0 when it did not report one), bytes.
    merge_peak_rss: its peak RSS from then to the end of the merge (VmHWM after a reset through
        /proc/self/clear_refs), bytes; 0 when it did not report one.
    """

    seconds: float
    peak_rss: int
    start_rss: int
    merge_peak_rss: int
    report: dict[str, Any]

    @property
    def increment(self) -> int:
        """What the merge added to the process's post-import RSS at its peak, bytes."""
        return self.merge_peak_rss - self.start_rss


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


def rss_now() -> int:
    """This process's resident set size in bytes (VmRSS of /proc/self/status)."""
    return _status("VmRSS")


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS; returns that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_now()


def peak_rss_since_reset() -> int:
    """This process's peak RSS (VmHWM) in bytes, since the last `reset_peak_rss`."""
    return _status("VmHWM")


def measure(argv: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run `argv` through a fresh wrapper process; return its wall time and peak RSS figures.

    A command that prints a line `PAPERZOO_WORKER {json}` (the workers of this module do) has that object returned
    as `report`, and its "start_rss" and "merge_peak_rss" taken. The command runs with OMP_NUM_THREADS=1. A
    non-zero exit raises RuntimeError with the command's stderr tail.
    """
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    start = time.perf_counter()
    process = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-S", "-c", _WRAPPER, *argv], capture_output=True, text=True, env=full_env, check=False
    )
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited {process.returncode}: {process.stderr[-3000:]}")
    report: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    for line in process.stdout.splitlines():
        if line.startswith(WORKER_TAG):
            report = json.loads(line[len(WORKER_TAG) :])
        elif line.startswith(RUSAGE_TAG):
            usage = json.loads(line[len(RUSAGE_TAG) :])
    if not usage:
        raise RuntimeError(f"the measuring wrapper reported nothing for {' '.join(argv[:6])} ...")
    return Measured(
        seconds,
        int(usage["maxrss_kib"]) * 1024,
        int(report.get("start_rss", 0)),
        int(report.get("merge_peak_rss", 0)),
        report,
    )


def worker_argv(mode: str, spec: Path) -> list[str]:
    """The command of one measured merge: `mode` "streamed", "eager" or "mergekit", `spec` a JSON/YAML file."""
    return [sys.executable, "-m", "paperzoo.efficiency.merging.checks.merge_tool", "worker", mode, str(spec)]


def merge_spec(base: Path, experts: Sequence[Path], output: Path, method: str, params: dict[str, Any]) -> dict:
    """A `paperzoo merge` config (as a dict) merging `experts` into `base`."""
    return {
        "base": str(base),
        "models": [{"path": str(p), "weight": 1.0} for p in experts],
        "method": {"name": method, "params": params},
        "output": str(output),
    }


def _worker(mode: str, spec_path: str) -> dict[str, Any]:
    """Run one merge in this process (the subprocess `measure` watches); returns what it prints."""
    torch.set_num_threads(1)
    if mode == "mergekit":
        from mergekit.scripts.run_yaml import main as mergekit_yaml

        spec = json.loads(Path(spec_path).read_text())
        start_rss = reset_peak_rss()
        start = time.perf_counter()
        mergekit_yaml.main(args=[spec["config"], spec["output"], *spec["options"]], standalone_mode=False)
        seconds = time.perf_counter() - start
        return {"start_rss": start_rss, "merge_peak_rss": peak_rss_since_reset(), "seconds": seconds}
    from safetensors.torch import load_file, save_file

    from paperzoo.efficiency.merging.config import config_from_dict
    from paperzoo.efficiency.merging.io import checkpoint_files
    from paperzoo.efficiency.merging.procedure import merge
    from paperzoo.efficiency.merging.run import run_merge

    spec = json.loads(Path(spec_path).read_text())
    start_rss = reset_peak_rss()
    start = time.perf_counter()
    if mode == "streamed":
        run_merge(config_from_dict(spec))
    elif mode == "eager":

        def whole(path: str) -> dict[str, torch.Tensor]:
            state: dict[str, torch.Tensor] = {}
            for file in checkpoint_files(path):
                state.update(load_file(file))
            return state

        base = whole(spec["base"])
        models = [whole(m["path"]) for m in spec["models"]]
        merged = merge(
            base,
            models,
            spec["method"]["name"],
            weights=[m["weight"] for m in spec["models"]],
            **spec["method"]["params"],
        )
        save_file(merged, spec["output"], metadata={"format": "pt"})
    else:
        raise ValueError(f"worker mode {mode!r} is not streamed, eager or mergekit")
    seconds = time.perf_counter() - start
    return {"start_rss": start_rss, "merge_peak_rss": peak_rss_since_reset(), "seconds": seconds}


# --- the check ------------------------------------------------------------------------------------------------------
def bound(count: int, largest_bytes: int) -> int:
    """The decision rule's ceiling on the streamed increment for K = `count` (module docstring)."""
    return (3 * count + 6) * largest_bytes + 64 * MIB


def check(quick: bool) -> "ClaimResult":
    from paperzoo.core.checks import ClaimResult, Criterion

    shape = QUICK if quick else FULL
    model_bytes = shape.parameters * 4
    largest_bytes = shape.largest * 4
    method: dict[str, float] = {}
    eager: dict[str, float] = {}
    criteria: list[Criterion] = []
    curves: dict[str, list[tuple[float, float]]] = {"streamed": [], "eager": [], "bound": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paperzoo-merge-tool-") as tmp:
        root = Path(tmp)
        base, experts = write_experts(root / "models", shape, max(COUNTS))
        write_seconds = time.perf_counter() - started
        for count in COUNTS:
            runs = {}
            for mode in ("streamed", "eager"):
                spec = merge_spec(
                    base, experts[:count], root / f"{mode}_{count}.safetensors", "ties", {"density": DENSITY}
                )
                spec_path = root / f"{mode}_{count}.json"
                spec_path.write_text(json.dumps(spec))
                runs[mode] = measure(worker_argv(mode, spec_path))
            streamed, baseline = runs["streamed"], runs["eager"]
            # both did the same merge
            from safetensors.torch import load_file

            a, b = load_file(root / f"streamed_{count}.safetensors"), load_file(root / f"eager_{count}.safetensors")
            max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
            del a, b
            for mode in ("streamed", "eager"):
                (root / f"{mode}_{count}.safetensors").unlink()
            method[f"K={count} streamed peak increment MiB"] = streamed.increment / MIB
            method[f"K={count} streamed increment / model bytes"] = streamed.increment / model_bytes
            method[f"K={count} streamed increment / largest tensor bytes"] = streamed.increment / largest_bytes
            method[f"K={count} streamed merge peak RSS MiB"] = streamed.merge_peak_rss / MIB
            method[f"K={count} streamed process peak RSS MiB"] = streamed.peak_rss / MIB
            method[f"K={count} streamed seconds"] = streamed.seconds
            method[f"K={count} max |streamed - eager|"] = max_diff
            eager[f"K={count} eager peak increment MiB"] = baseline.increment / MIB
            eager[f"K={count} eager increment / model bytes"] = baseline.increment / model_bytes
            eager[f"K={count} eager merge peak RSS MiB"] = baseline.merge_peak_rss / MIB
            eager[f"K={count} eager process peak RSS MiB"] = baseline.peak_rss / MIB
            eager[f"K={count} eager seconds"] = baseline.seconds
            curves["streamed"].append((count, streamed.increment / MIB))
            curves["eager"].append((count, baseline.increment / MIB))
            curves["bound"].append((count, bound(count, largest_bytes) / MIB))
            criteria += [
                Criterion(
                    f"K={count}: streamed increment - (3K+6) x largest tensor - 64 MiB (MiB)",
                    (streamed.increment - bound(count, largest_bytes)) / MIB,
                    "<=",
                    0.0,
                ),
                Criterion(
                    f"K={count}: streamed merge peak - eager merge peak (MiB)",
                    (streamed.merge_peak_rss - baseline.merge_peak_rss) / MIB,
                    "<=",
                    0.0,
                ),
                Criterion(
                    f"K={count}: eager increment / (K x model bytes)",
                    baseline.increment / (count * model_bytes),
                    ">=",
                    1.0,
                ),
                Criterion(f"K={count}: max |streamed - eager|", max_diff, "<=", 1e-6),
            ]
    return ClaimResult(
        key="merge",
        claim=(
            "Merging K models streams tensor by tensor: peak RSS stays near K x the largest tensor plus the output "
            "writer, not K x the model."
        ),
        paper_reported="(a tool claim, no paper figure) mergekit describes its merges as out-of-core in the same way",
        decision_rule=(
            "For K = 2, 4, 6 (TIES, global scope, density 0.2, 1 thread): the streamed tool's RSS increment over its "
            "post-import RSS <= (3K + 6) x the largest tensor + 64 MiB, its merge peak RSS < the eager baseline's "
            "(load every checkpoint whole, merge, save), the eager increment >= K x the model (the baseline holds the "
            "models), and both write the same merged tensors (max abs difference <= 1e-6)."
        ),
        method=method,
        baselines={"eager (load_file every model, merge, save_file)": eager},
        criteria=criteria,
        curves=curves,
        plot={"xlabel": "models merged K", "ylabel": "peak RSS increment (MiB)"},
        config={
            "shape": asdict(shape),
            "parameters": shape.parameters,
            "model MiB": model_bytes / MIB,
            "largest tensor MiB": largest_bytes / MIB,
            "method": "ties",
            "density": DENSITY,
            "scope": "global",
            "counts": list(COUNTS),
            "threads": 1,
            "write inputs seconds": write_seconds,
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one measured merge in this process (used by measure)")
    worker.add_argument("mode", choices=("streamed", "eager", "mergekit"))
    worker.add_argument("spec")
    args = parser.parse_args(argv)
    print(WORKER_TAG + json.dumps(_worker(args.mode, args.spec)), flush=True)


if __name__ == "__main__":
    main()
