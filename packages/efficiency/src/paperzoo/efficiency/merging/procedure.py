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
- pcb: PCB-Merging (arXiv:2410.02396), `pcb.py`: per-entry balancing scores (intra-task magnitude x inter-task
  agreement), each task keeps the top `ratio` of its scores, score-weighted mean of the outlier-clipped deltas.

Deviations and choices: weights enter TIES's election and disjoint mean as a weighted sum and weighted mean (all 1
gives the paper); ties and dare_ties need weights > 0, average weights >= 0 with a positive sum. Tensors that are
not floating point (integer buffers such as position ids or BatchNorm's num_batches_tracked) and tensors matched by
an `exclude` pattern (fnmatch, e.g. "classifier.*") are copied from the base. Global TIES thresholds are exact and
take two extra streamed passes over the models (one tensor of each model at a time; `sparsify.order_statistics`);
PCB's statistics take four. Inputs may be any mapping of name -> tensor (a lazy one
loads each tensor when indexed).

`merge_iter` yields the merged tensors one at a time (what `merge` collects, and what a writer can stream to disk);
`model_params` overrides a method's per-model parameters (ties: density; DARE: drop_rate, rescale; pcb: ratio) for
one model, as mergekit's per-model parameters do; parameters of the whole merge (lambda_, scope, clip) cannot be.
"""

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.consensus import ties_merge
from paperzoo.efficiency.merging.pcb import pcb_combine, pcb_statistics
from paperzoo.efficiency.merging.sparsify import generator_for, global_thresholds, magnitude_mask, random_drop
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible, task_vector

__all__ = [
    "METHODS",
    "Method",
    "Sources",
    "StateDict",
    "merge",
    "merge_iter",
    "method_names",
    "method_parameters",
    "validate_model_parameters",
    "validate_parameters",
]


@dataclass(frozen=True)
class Sources:
    """What a method's `prepare` pass sees: the inputs, the names it merges, and the validated parameters."""

    base: Mapping[str, torch.Tensor]
    models: Sequence[Mapping[str, torch.Tensor]]
    names: tuple[str, ...]  # the merged (floating point, not excluded) tensors, in the base's order
    weights: torch.Tensor  # (K,) float32
    params: dict[str, Any]  # the global parameters
    model_params: tuple[dict[str, Any], ...]  # per model: the global parameters with its overrides

    def all_deltas(self) -> Callable[[], Iterator[tuple[str, torch.Tensor]]]:
        """A function returning a fresh iterator of (name, deltas (K, *shape) float32), one tensor name at a time."""

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            for name in self.names:
                base = self.base[name].detach()
                yield name, torch.stack([task_vector(base, model[name].detach(), name) for model in self.models])

        return stream


@dataclass(frozen=True)
class _Context:
    """What a method's per-tensor function sees besides the tensors."""

    name: str
    weights: torch.Tensor  # (K,) float32
    params: dict[str, Any]  # global parameters
    model_params: tuple[dict[str, Any], ...]  # per model: global parameters with that model's overrides
    seed: int
    prepared: Any  # what the method's `prepare` returned (global statistics), None without one


_Combine = Callable[[torch.Tensor, list[torch.Tensor], _Context], torch.Tensor]
_Prepare = Callable[[Sources], Any]


@dataclass(frozen=True)
class Method:
    """A merge method: its parameters with defaults, and the function merging one tensor (returns float32).

    `per_model` names the parameters a model may override (`model_params`); `prepare`, when given, runs before
    the merge over all the tensors (streamed) and returns global statistics the per-tensor function reads from
    `ctx.prepared` (e.g. one magnitude threshold per model over its whole task vector).
    """

    name: str
    description: str
    combine: _Combine
    parameters: dict[str, Any] = field(default_factory=dict)
    per_model: frozenset[str] = frozenset()
    prepare: _Prepare | None = None


def _average(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    total = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for w, t in zip(ctx.weights.tolist(), tensors, strict=True):
        total += w * t.to(device=base.device, dtype=torch.float32)
    return total / float(ctx.weights.sum())


def _deltas(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    return torch.stack([task_vector(base, t, ctx.name) for t in tensors])  # (K, *shape)


def _dare(deltas: torch.Tensor, ctx: _Context) -> torch.Tensor:
    dropped = []
    for i, (d, params) in enumerate(zip(deltas, ctx.model_params, strict=True)):
        p, rescale = float(params["drop_rate"]), bool(params["rescale"])
        dropped.append(random_drop(d, p, generator_for(ctx.seed, i, ctx.name), rescale=rescale))
    return torch.stack(dropped)


def _weighted_sum(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (deltas * weights.to(deltas.device).reshape(-1, *([1] * (deltas.dim() - 1)))).sum(dim=0)


def _task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    merged = _weighted_sum(_deltas(base, tensors, ctx), ctx.weights)
    return base.float() + float(ctx.params["lambda_"]) * merged


def _ties_thresholds(sources: Sources) -> list[float] | None:
    # the paper's scope: one threshold per model over its whole task vector (two streamed passes over all models)
    if sources.params["scope"] != "global":
        return None
    stream = sources.all_deltas()
    return global_thresholds(
        lambda: (deltas for _, deltas in stream()), [float(params["density"]) for params in sources.model_params]
    )


def _ties(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    deltas = _deltas(base, tensors, ctx)
    thresholds: list[float | None] = list(ctx.prepared) if ctx.prepared is not None else [None] * len(tensors)
    trimmed = torch.stack(
        [
            d * magnitude_mask(d, float(params["density"]), thr)
            for d, thr, params in zip(deltas, thresholds, ctx.model_params, strict=True)
        ]
    )
    return base.float() + float(ctx.params["lambda_"]) * ties_merge(trimmed, ctx.weights.to(deltas.device))


def _dare_task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    merged = _weighted_sum(_dare(_deltas(base, tensors, ctx), ctx), ctx.weights)
    return base.float() + float(ctx.params["lambda_"]) * merged


def _dare_ties(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    dropped = _dare(_deltas(base, tensors, ctx), ctx)
    return base.float() + float(ctx.params["lambda_"]) * ties_merge(dropped, ctx.weights.to(dropped.device))


def _pcb(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> torch.Tensor:
    deltas = _deltas(base, tensors, ctx)
    return pcb_combine(base, deltas, ctx.weights, float(ctx.params["lambda_"]), ctx.prepared)


_DARE = {"drop_rate": 0.9, "rescale": True, "lambda_": 1.0}
_DARE_PER_MODEL = frozenset({"drop_rate", "rescale"})

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
            frozenset({"density"}),
            _ties_thresholds,
        ),
        Method(
            "dare_task_arithmetic",
            "DARE drop and rescale, then task arithmetic",
            _dare_task_arithmetic,
            _DARE,
            _DARE_PER_MODEL,
        ),
        Method(
            "dare_ties",
            "DARE drop and rescale, then sign election and disjoint mean",
            _dare_ties,
            _DARE,
            _DARE_PER_MODEL,
        ),
        Method(
            "pcb",
            "PCB: intra x inter balancing scores, drop outside each task's top ratio, score-weighted mean",
            _pcb,
            {"ratio": 0.1, "clip": 1e-4, "lambda_": 1.0},
            frozenset({"ratio"}),
            pcb_statistics,
        ),
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
    if "ratio" in full:
        ratio = _number("ratio", full["ratio"])
        require(0.0 < ratio <= 1.0, f"ratio={ratio} is out of range; expected 0 < ratio <= 1 (the kept fraction).")
    if "clip" in full:
        clip = _number("clip", full["clip"])
        require(0.0 <= clip <= 0.1, f"clip={clip} is out of range; expected 0 <= clip <= 0.1 (outlier fraction).")
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


def validate_model_parameters(
    method: str, params: Mapping[str, Any], model_params: Sequence[Mapping[str, Any]] | None, count: int
) -> tuple[dict[str, Any], ...]:
    """Per model, the method's full parameters: defaults < `params` < `model_params[i]`.

    ConfigError, naming the model index and the parameter, when an override is unknown, not per-model (e.g.
    lambda_, scope: they apply to the whole merge), or out of range; or when there is not one entry per model.
    """
    spec = _method(method)
    full = validate_parameters(method, params)
    if model_params is None:
        return tuple(dict(full) for _ in range(count))
    require(
        not isinstance(model_params, (str, Mapping)) and len(model_params) == count,
        f"model_params has {len(model_params)} entries for {count} models; expected one mapping per model.",
    )
    per_model = ", ".join(sorted(spec.per_model)) or "none"
    out = []
    for index, overrides in enumerate(model_params):
        require(isinstance(overrides, Mapping), f"model_params[{index}]={overrides!r} is not a mapping of parameters.")
        for key in overrides:
            if key not in full:
                raise ConfigError(
                    f"model_params[{index}]: unknown parameter {key!r} for merge method {method!r}; per-model"
                    f" parameters: {per_model}."
                )
            if key not in spec.per_model:
                raise ConfigError(
                    f"model_params[{index}]: parameter {key!r} of merge method {method!r} applies to the whole merge,"
                    f" not per model; per-model parameters: {per_model}."
                )
        try:
            out.append(validate_parameters(method, {**full, **overrides}))
        except ConfigError as error:
            raise ConfigError(f"model_params[{index}]: {error}") from None
    return tuple(out)


def merge_iter(
    base: StateDict,
    models: Sequence[StateDict],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    exclude: Sequence[str] = (),
    seed: int = 0,
    model_params: Sequence[Mapping[str, Any]] | None = None,
    **params: Any,
) -> Iterator[tuple[str, torch.Tensor]]:
    """`merge`, one tensor at a time: yields (name, merged tensor) in the base's order.

    Everything is validated before this returns (ConfigError on bad arguments); a method with global statistics
    (global-scope TIES, PCB) streams over all tensors once or more when the first item is requested. Peak memory is
    near K + a few times the largest tensor when the inputs are lazy mappings and the caller consumes each item
    before asking for the next. Arguments as in `merge`.
    """
    spec = _method(method)
    full = validate_parameters(method, params)
    require(len(models) >= 1, "No models to merge; expected at least one.")
    per_model = validate_model_parameters(method, params, model_params, len(models))
    if isinstance(exclude, str):
        exclude = (exclude,)
    w = _weights(method, weights, len(models))
    check_compatible(base, models)
    mergeable = tuple(
        name
        for name, tensor in base.items()
        if tensor.is_floating_point() and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    )
    sources = Sources(base, models, mergeable, w, full, per_model)
    return _stream(spec, sources, seed)


def _stream(spec: Method, sources: Sources, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    with torch.no_grad():
        prepared = spec.prepare(sources) if spec.prepare is not None else None
    chosen = set(sources.names)
    for name, tensor in sources.base.items():
        with torch.no_grad():
            if name not in chosen:
                yield name, tensor.detach().clone()
                continue
            ctx = _Context(name, sources.weights, sources.params, sources.model_params, seed, prepared)
            merged = spec.combine(tensor.detach(), [model[name].detach() for model in sources.models], ctx)
            yield name, merged.to(tensor.dtype)


def merge(
    base: StateDict,
    models: Sequence[StateDict],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    exclude: Sequence[str] = (),
    seed: int = 0,
    model_params: Sequence[Mapping[str, Any]] | None = None,
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
        model_params: per model, overrides of the method's per-model parameters (`METHODS[method].per_model`, e.g.
            density for ties, drop_rate for DARE): one mapping per model, {} for none.
        params: the method's parameters (`method_parameters(method)`).
    """
    return dict(
        merge_iter(
            base, models, method, weights=weights, exclude=exclude, seed=seed, model_params=model_params, **params
        )
    )
