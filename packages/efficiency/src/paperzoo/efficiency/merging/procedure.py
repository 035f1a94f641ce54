"""The merge procedure: one streaming task-arithmetic engine, parameterised by sparsification x consensus.

Methods (all stream tensor by tensor; the merged tensor takes the base tensor's dtype; inputs are never mutated):
- average: the (weighted) mean of the models, sum_i w_i theta_i / sum_i w_i ("model soups", arXiv:2203.05482).
- task_arithmetic: theta = base + lambda * sum_i w_i delta_i (arXiv:2212.04089).
- ties: trim each delta to its top-`density` magnitudes, elect signs, disjoint mean, theta = base + lambda * merged
  (TIES-Merging, arXiv:2306.01708). scope "global" (the paper) thresholds each model over its whole task vector,
  "tensor" (mergekit) per tensor.
- dare_task_arithmetic: DARE random drop with rescale, then task arithmetic (arXiv:2311.03099).
- dare_ties: DARE random drop with rescale, then sign election and disjoint mean (mergekit's dare_ties; no magnitude
  trim).

Deviations and choices: weights enter TIES's election and disjoint mean as a weighted sum and weighted mean (all 1
gives the paper); ties and dare_ties need weights > 0, average weights >= 0 with a positive sum. Tensors that are
not floating point (integer buffers such as position ids or BatchNorm's num_batches_tracked) and tensors matched by
an `exclude` pattern (fnmatch, e.g. "classifier.*") are copied from the base. Global TIES thresholds take one extra
pass over the models (one model's magnitudes at a time). Inputs may be any mapping of name -> tensor (a lazy one
loads each tensor when indexed).
"""

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.consensus import ties_merge
from paperzoo.efficiency.merging.sparsify import generator_for, global_threshold, magnitude_mask, random_drop
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible, task_vector

__all__ = ["METHODS", "Method", "StateDict", "merge", "method_names", "method_parameters", "validate_parameters"]


@dataclass(frozen=True)
class _Context:
    """What a method's per-tensor function sees besides the tensors."""

    name: str
    weights: torch.Tensor  # (K,) float32
    params: dict[str, Any]
    seed: int
    thresholds: list[float] | None  # per model, for global-scope TIES


_Combine = Callable[[torch.Tensor, list[torch.Tensor], _Context], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A merge method: its parameters with defaults, and the function merging one tensor (returns float32)."""

    name: str
    description: str
    combine: _Combine
    parameters: dict[str, Any] = field(default_factory=dict)


def _average(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    total = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for w, t in zip(ctx.weights.tolist(), tensors, strict=True):
        total += w * t.to(device=base.device, dtype=torch.float32)
    return total / float(ctx.weights.sum())


def _deltas(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    return torch.stack([task_vector(base, t, ctx.name) for t in tensors])  # (K, *shape)


def _dare(deltas: torch.Tensor, ctx: _Context) -> torch.Tensor:
    p, rescale = float(ctx.params["drop_rate"]), bool(ctx.params["rescale"])
    return torch.stack(
        [random_drop(d, p, generator_for(ctx.seed, i, ctx.name), rescale=rescale) for i, d in enumerate(deltas)]
    )


def _weighted_sum(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (deltas * weights.to(deltas.device).reshape(-1, *([1] * (deltas.dim() - 1)))).sum(dim=0)


def _task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    merged = _weighted_sum(_deltas(base, tensors, ctx), ctx.weights)
    return base.float() + float(ctx.params["lambda_"]) * merged


def _ties(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    deltas = _deltas(base, tensors, ctx)
    density = float(ctx.params["density"])
    thresholds: list[float | None] = list(ctx.thresholds) if ctx.thresholds else [None] * len(tensors)
    trimmed = torch.stack([d * magnitude_mask(d, density, thr) for d, thr in zip(deltas, thresholds, strict=True)])
    return base.float() + float(ctx.params["lambda_"]) * ties_merge(trimmed, ctx.weights.to(deltas.device))


def _dare_task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    merged = _weighted_sum(_dare(_deltas(base, tensors, ctx), ctx), ctx.weights)
    return base.float() + float(ctx.params["lambda_"]) * merged


def _dare_ties(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    dropped = _dare(_deltas(base, tensors, ctx), ctx)
    return base.float() + float(ctx.params["lambda_"]) * ties_merge(dropped, ctx.weights.to(dropped.device))


_DARE = {"drop_rate": 0.9, "rescale": True, "lambda_": 1.0}

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("average", "weighted mean of the models", _average),
        Method("task_arithmetic", "base + lambda * sum_i w_i delta_i", _task_arithmetic, {"lambda_": 1.0}),
        Method(
            "ties",
            "trim to top-density magnitudes, elect signs, disjoint mean",
            _ties,
            {"density": 0.2, "scope": "global", "lambda_": 1.0},
        ),
        Method("dare_task_arithmetic", "DARE drop and rescale, then task arithmetic", _dare_task_arithmetic, _DARE),
        Method("dare_ties", "DARE drop and rescale, then sign election and disjoint mean", _dare_ties, _DARE),
    )
}


def method_names() -> list[str]:
    """The names `merge` accepts."""
    return list(METHODS)


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"Unknown merge method {name!r}; expected one of {', '.join(METHODS)}.")
    return METHODS[name]


def method_parameters(name: str) -> dict[str, Any]:
    """The parameters of method `name` with their defaults (a copy)."""
    return dict(_method(name).parameters)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"Parameter {name}={value!r} is not a number.")
    return float(value)


def validate_parameters(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The method's full parameters (defaults overridden by `params`); ConfigError on unknown names or bad values."""
    full = method_parameters(method)
    for key in params:
        if key not in full:
            valid = ", ".join(full) or "none"
            raise ConfigError(f"Unknown parameter {key!r} for merge method {method!r}; valid parameters: {valid}.")
    full.update(params)
    if "lambda_" in full:
        lam = _number("lambda_", full["lambda_"])
        require(lam == lam and abs(lam) != float("inf"), f"lambda_={lam} is not finite.")
    if "density" in full:
        density = _number("density", full["density"])
        require(0.0 < density <= 1.0, f"density={density} is out of range; expected 0 < density <= 1.")
    if "scope" in full:
        require(full["scope"] in ("global", "tensor"), f"scope={full['scope']!r} is not 'global' or 'tensor'.")
    if "drop_rate" in full:
        p = _number("drop_rate", full["drop_rate"])
        require(0.0 <= p < 1.0, f"drop_rate={p} is out of range; expected 0 <= drop_rate < 1.")
    if "rescale" in full:
        require(isinstance(full["rescale"], bool), f"rescale={full['rescale']!r} is not true or false.")
    return full


def _weights(method: str, weights: Sequence[float] | None, count: int) -> torch.Tensor:
    if weights is None:
        return torch.ones(count)
    require(len(weights) == count, f"{len(weights)} weights given for {count} models; expected one per model.")
    values = [_number("weight", w) for w in weights]
    require(all(abs(w) != float("inf") and w == w for w in values), f"weights {values} are not all finite.")
    if method in ("ties", "dare_ties"):
        require(all(w > 0 for w in values), f"weights {values} must all be > 0 for {method}.")
    if method == "average":
        require(all(w >= 0 for w in values) and sum(values) > 0, f"weights {values} must be >= 0 with a positive sum.")
    return torch.tensor(values, dtype=torch.float32)


def merge(
    base: StateDict,
    models: Sequence[StateDict],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    exclude: Sequence[str] = (),
    seed: int = 0,
    **params: Any,
) -> StateDict:
    """Merge `models` (fine-tuned from `base`) with `method`; returns a new state dict in the base's dtypes.

    Args:
        base: name -> tensor of the pre-trained model (any mapping; read one tensor at a time).
        models: the K fine-tuned models, same names and shapes as `base`.
        method: one of `method_names()`.
        weights: w_i per model (default 1 each).
        exclude: fnmatch patterns of names copied from the base unchanged.
        seed: seeds DARE's drop masks, per (model, tensor).
        params: the method's parameters (`method_parameters(method)`).
    """
    spec = _method(method)
    full = validate_parameters(method, params)
    require(len(models) >= 1, "No models to merge; expected at least one.")
    if isinstance(exclude, str):
        exclude = (exclude,)
    w = _weights(method, weights, len(models))
    check_compatible(base, models)
    mergeable = [
        name
        for name, tensor in base.items()
        if tensor.is_floating_point() and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    ]
    thresholds = None
    if method == "ties" and full["scope"] == "global":
        thresholds = [
            global_threshold((task_vector(base[n], model[n], n) for n in mergeable), float(full["density"]))
            for model in models
        ]
    chosen = set(mergeable)
    out: StateDict = {}
    with torch.no_grad():
        for name, tensor in base.items():
            if name not in chosen:
                out[name] = tensor.detach().clone()
                continue
            ctx = _Context(name, w, full, seed, thresholds)
            merged = spec.combine(tensor.detach(), [model[name].detach() for model in models], ctx)
            out[name] = merged.to(tensor.dtype)
    return out
