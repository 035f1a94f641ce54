"""`paperzoo merge` (= `paperzoo run merge`): validate a merge config, merge lazily, write one safetensors file.

    paperzoo merge --config merge.yaml          (or a packaged config, e.g. merge/tiny; any key also as --key value)

The whole config is checked before any weight is read (`config.validate`: files, method, parameters, per-model
parameters, weights, tensor names and shapes from headers, output directory). The checkpoints are then opened lazily
(`io.LazyStateDict`: one tensor read at a time) and merged by `procedure.merge_iter` (TIES arXiv:2306.01708, DARE
arXiv:2311.03099, task arithmetic arXiv:2212.04089), whose merged tensors stream straight into the safetensors
writer (`io.save_safetensors_stream`, header from base's layout): at any time the run holds one tensor of each input
and the merged tensor, never a whole model (peak RSS measured by the `merge` card's check,
`paperzoo.efficiency.merging.checks.merge_tool`). The output is written atomically; its metadata holds {"format":
"pt"} (what Hugging Face loaders expect) and "paperzoo_merge", the merge card as JSON: method, full parameters
(defaults filled in), each model's parameter overrides, weights, exclude patterns, seed, the SHA-256 of base and of
every model, and the paperzoo versions.
"""

import json
import math
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from safetensors import safe_open

from paperzoo.efficiency.merging.config import MergeConfig, MethodSpec, ModelSpec, model_params, validate, weights
from paperzoo.efficiency.merging.io import LazyStateDict, save_safetensors_stream, sha256
from paperzoo.efficiency.merging.procedure import merge_iter, validate_parameters

CARD_METADATA_KEY = "paperzoo_merge"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def merge_card(config: MergeConfig, params: dict[str, Any]) -> dict[str, Any]:
    """What the output's metadata records about how it was made."""
    return {
        "method": config.method.name,
        "params": params,
        "model_params": model_params(config),
        "weights": weights(config),
        "exclude": list(config.exclude),
        "seed": config.seed,
        "base": {"path": str(config.base), "sha256": sha256(config.base)},
        "models": [{"path": str(m.path), "sha256": sha256(m.path)} for m in config.models],
        "paperzoo": {name: _version(name) for name in ("paperzoo-core", "paperzoo-efficiency")},
    }


def read_merge_card(path: str | Path) -> dict[str, Any]:
    """The merge card stored in a safetensors file written by `merge_models`."""
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {})[CARD_METADATA_KEY])


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """Validate `config`, merge, write `config.output`; returns figures of the run."""
    start = time.perf_counter()
    plan = validate(config)
    params = validate_parameters(config.method.name, config.method.params)  # defaults filled in, for the card
    base = LazyStateDict(config.base)
    models = [LazyStateDict(m.path) for m in config.models]
    merged = merge_iter(
        base,
        models,
        config.method.name,
        weights=weights(config),
        exclude=tuple(config.exclude),
        seed=config.seed,
        model_params=model_params(config),
        **config.method.params,
    )
    # merged tensors take base's shapes and dtypes, so base's header is the output's layout
    card = merge_card(config, params)
    written = save_safetensors_stream(
        plan.layout, merged, config.output, {"format": "pt", CARD_METADATA_KEY: json.dumps(card)}
    )
    return {
        "output": str(config.output),
        "method": config.method.name,
        "models": len(config.models),
        "tensors": len(plan.layout),
        "parameters": sum(math.prod(shape) for shape, _ in plan.layout.values()),
        "bytes_written": written,
        "seconds": time.perf_counter() - start,
    }


def merge_models(
    base: str,
    models: list[ModelSpec],
    method: MethodSpec,
    output: str,
    exclude: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Merge fine-tuned checkpoints into one (`paperzoo merge --config merge.yaml`).

    Args:
        base: the pretrained checkpoint (.safetensors, .pt/.pth/.bin/.ckpt, or a Hugging Face model directory).
        models: the fine-tuned checkpoints, each {path, weight, params}; same tensor names and shapes as base; params
            overrides the method's per-model parameters for that model (ties: density; dare_*: drop_rate, rescale).
        method: {name, params}: name one of average, task_arithmetic, ties, dare_task_arithmetic, dare_ties;
            params those of the method (ties: density, scope, lambda_; dare_*: drop_rate, rescale, lambda_).
        output: the merged model, a .safetensors file (written atomically, merge card in its metadata).
        exclude: fnmatch patterns of tensors copied from base unchanged (e.g. "classifier.*").
        seed: seeds DARE's random drop.
    """
    config = MergeConfig(
        base=base, models=list(models), method=method, output=output, exclude=list(exclude or []), seed=seed
    )
    return run_merge(config)
