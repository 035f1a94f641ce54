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

Memory model: tensors are merged one at a time, and each one in flat chunks of at most `CHUNK` entries. Per tensor
the engine holds the base tensor and the K model tensors as read (their dtype), the output (preallocated in the base's
dtype) and, for DARE, each model's keep mask as bool (1 byte per entry, drawn for the whole tensor so that it equals
the unchunked draw); every float32 temporary (the K deltas, trimmed or dropped deltas, signs, masks, sums) has the
size (K, chunk), a few tens of MiB at most whatever the tensor. So a merge of lazy inputs peaks near (K + 2) x the
largest tensor (+ K/4 for DARE) plus a constant, not K x the model. Per-tensor TIES thresholds are exact k-th
magnitudes computed over the chunks (`sparsify.global_thresholds`, two passes over the tensor); the global passes
(TIES global thresholds, PCB statistics) stream the same chunks. Chunking changes no result: every operation is
elementwise or a reduction over the K models, so the output is bit-identical to one whole-tensor step.

`merge_iter` yields the merged tensors one at a time (what `merge` collects, and what a writer can stream to disk);
`model_params` overrides a method's per-model parameters (ties: density; DARE: drop_rate, rescale; pcb: ratio) for
one model, as mergekit's per-model parameters do; parameters of the whole merge (lambda_, scope, clip) cannot be.
"""

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.consensus import sum_models, ties_merge
from paperzoo.efficiency.merging.pcb import pcb_combine, pcb_statistics
from paperzoo.efficiency.merging.sparsify import (
    apply_drop,
    drop_mask,
    generator_for,
    global_thresholds,
    magnitude_mask,
)
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible, layout

__all__ = [
    "CHUNK",
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


CHUNK = 1 << 20  # entries per step of a per-tensor combine: bounds its float32 temporaries to (K, CHUNK)


def _spans(count: int) -> Iterator[slice]:
    """Consecutive slices of at most CHUNK entries covering range(count) (CHUNK read at call time: tests patch it)."""
    step = CHUNK
    return (slice(start, min(start + step, count)) for start in range(0, count, step))


def _read(model: Mapping[str, torch.Tensor], name: str, base: torch.Tensor) -> torch.Tensor:
    """One model's tensor `name` (read once), flattened; ConfigError when its shape differs from the base's."""
    tensor = model[name].detach()
    if tuple(tensor.shape) != tuple(base.shape):
        raise ConfigError(
            f"Tensor {name!r} has shape {tuple(tensor.shape)} in a model but {tuple(base.shape)} in the base."
        )
    return tensor.reshape(-1)


def _delta_chunk(base: torch.Tensor, chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """(K, c) float32 deltas model - base of one chunk (the base chunk (c,) fixes the device), as `task_vector`."""
    return torch.stack([chunk.to(device=base.device, dtype=torch.float32) - base.to(torch.float32) for chunk in chunks])


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
        """A function returning a fresh iterator of (name, deltas (K, c) float32): the flattened task vectors of each
        tensor in chunks of at most CHUNK entries (each tensor read once per pass), one chunk at a time."""

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            for name in self.names:
                base = self.base[name].detach()
                models = [_read(model, name, base) for model in self.models]
                flat = base.reshape(-1)
                for span in _spans(flat.numel()):
                    yield name, _delta_chunk(flat[span], [model[span] for model in models])

        return stream


@dataclass(frozen=True)
class _Context:
    """What a method's per-tensor function sees besides the tensors."""

    name: str
    weights: torch.Tensor  # (K,) float32
    params: dict[str, Any]  # global parameters
    model_params: tuple[dict[str, Any], ...]  # per model: global parameters with that model's overrides
    seed: int
    shape: tuple[int, ...]  # the tensor's shape (the combine sees it flattened)
    prepared: Any  # what the method's `prepare` returned (global statistics), None without one
    local: Any = None  # what the method's `per_tensor` returned for this tensor, None without one


# (base chunk (c,), the K models' chunks (c,) as read, ctx, the chunk's slice of the flattened tensor) -> (c,) float32
_Combine = Callable[[torch.Tensor, list[torch.Tensor], _Context, slice], torch.Tensor]
_Prepare = Callable[[Sources], Any]
# (flattened base (n,), the K flattened models (n,), ctx) -> per-tensor state for `combine` (ctx.local)
_PerTensor = Callable[[torch.Tensor, list[torch.Tensor], _Context], Any]


@dataclass(frozen=True)
class Method:
    """A merge method: its parameters with defaults, and the function merging one chunk of a tensor (float32).

    `combine` must be elementwise or reduce over the K models only, so that chunking does not change its result.
    `per_model` names the parameters a model may override (`model_params`); `prepare`, when given, runs before
    the merge over all the tensors (streamed) and returns global statistics `combine` reads from `ctx.prepared`
    (e.g. one magnitude threshold per model over its whole task vector); `per_tensor`, when given, runs once per
    tensor before its chunks and returns what `combine` reads from `ctx.local` (DARE's masks, per-tensor thresholds).
    """

    name: str
    description: str
    combine: _Combine
    parameters: dict[str, Any] = field(default_factory=dict)
    per_model: frozenset[str] = frozenset()
    prepare: _Prepare | None = None
    per_tensor: _PerTensor | None = None


def _average(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context, span: slice) -> torch.Tensor:
    total = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for w, t in zip(ctx.weights.tolist(), tensors, strict=True):
        total += w * t.to(device=base.device, dtype=torch.float32)
    return total / float(ctx.weights.sum())


def _weighted_sum(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return sum_models(deltas * weights.to(deltas.device).reshape(-1, *([1] * (deltas.dim() - 1))))


def _task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context, span: slice) -> torch.Tensor:
    merged = _weighted_sum(_delta_chunk(base, tensors), ctx.weights)
    return base.float() + float(ctx.params["lambda_"]) * merged


def _ties_thresholds(sources: Sources) -> list[float] | None:
    # the paper's scope: one threshold per model over its whole task vector (two streamed passes over all models)
    if sources.params["scope"] != "global":
        return None
    stream = sources.all_deltas()
    return global_thresholds(
        lambda: (deltas for _, deltas in stream()), [float(params["density"]) for params in sources.model_params]
    )


def _ties_tensor_thresholds(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> list[float]:
    # scope "global": the prepared thresholds; "tensor": each model's exact k-th magnitude over this tensor, selected
    # over its chunks in bounded memory (equal to torch.kthvalue on the whole tensor's magnitudes)
    if ctx.prepared is not None:
        return list(ctx.prepared)

    def chunks() -> Iterator[torch.Tensor]:
        for span in _spans(base.numel()):
            yield _delta_chunk(base[span], [t[span] for t in tensors])  # (K, c)

    return global_thresholds(chunks, [float(params["density"]) for params in ctx.model_params])


def _ties(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context, span: slice) -> torch.Tensor:
    deltas = _delta_chunk(base, tensors)  # (K, c)
    trimmed = torch.stack(
        [
            d * magnitude_mask(d, float(params["density"]), thr)
            for d, thr, params in zip(deltas, ctx.local, ctx.model_params, strict=True)
        ]
    )
    return base.float() + float(ctx.params["lambda_"]) * ties_merge(trimmed, ctx.weights.to(deltas.device))


def _dare_masks(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context) -> list[torch.Tensor | None]:
    # each model's keep mask over the whole tensor, bool (n,): the same draw as an unchunked merge, seeded per
    # (seed, model, name); None where drop_rate is 0 (nothing dropped, nothing drawn)
    masks: list[torch.Tensor | None] = []
    for i, params in enumerate(ctx.model_params):
        p = float(params["drop_rate"])
        masks.append(None if p == 0.0 else drop_mask(ctx.shape, p, generator_for(ctx.seed, i, ctx.name)).reshape(-1))
    return masks


def _dare(deltas: torch.Tensor, ctx: _Context, span: slice) -> torch.Tensor:
    dropped = []
    for d, keep, params in zip(deltas, ctx.local, ctx.model_params, strict=True):
        p, rescale = float(params["drop_rate"]), bool(params["rescale"])
        dropped.append(apply_drop(d, None if keep is None else keep[span], p, rescale=rescale))
    return torch.stack(dropped)


def _dare_task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context, span: slice) -> torch.Tensor:
    merged = _weighted_sum(_dare(_delta_chunk(base, tensors), ctx, span), ctx.weights)
    return base.float() + float(ctx.params["lambda_"]) * merged


def _dare_ties(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context, span: slice) -> torch.Tensor:
    dropped = _dare(_delta_chunk(base, tensors), ctx, span)
    return base.float() + float(ctx.params["lambda_"]) * ties_merge(dropped, ctx.weights.to(dropped.device))


def _pcb(base: torch.Tensor, tensors: list[torch.Tensor], ctx: _Context, span: slice) -> torch.Tensor:
    return pcb_combine(base, _delta_chunk(base, tensors), ctx.weights, float(ctx.params["lambda_"]), ctx.prepared)


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
            _ties_tensor_thresholds,
        ),
        Method(
            "dare_task_arithmetic",
            "DARE drop and rescale, then task arithmetic",
            _dare_task_arithmetic,
            _DARE,
            _DARE_PER_MODEL,
            per_tensor=_dare_masks,
        ),
        Method(
            "dare_ties",
            "DARE drop and rescale, then sign election and disjoint mean",
            _dare_ties,
            _DARE,
            _DARE_PER_MODEL,
            per_tensor=_dare_masks,
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
        for name, (_, dtype) in layout(base).items()
        if dtype.is_floating_point and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
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
            base = tensor.detach()
            flat = base.reshape(-1)  # (n,)
            models = [_read(model, name, base) for model in sources.models]  # K x (n,), read once, as stored
            shape = tuple(base.shape)
            ctx = _Context(name, sources.weights, sources.params, sources.model_params, seed, shape, prepared)
            if spec.per_tensor is not None:
                ctx = replace(ctx, local=spec.per_tensor(flat, models, ctx))
            merged = torch.empty(shape, dtype=base.dtype, device=base.device)
            out = merged.view(-1)
            for span in _spans(flat.numel()):
                out[span] = spec.combine(flat[span], [model[span] for model in models], ctx, span).to(base.dtype)
            del models, ctx
            yield name, merged


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
