"""Fisher merging: "Merging Models with Fisher-Weighted Averaging" (Matena & Raffel, arXiv:2111.09832).

Implemented:
- `diagonal_fisher`: the diagonal of the Fisher information of a classifier,
  F = E_x E_{y ~ p_theta(y|x)} [(d log p_theta(y|x) / d theta)^2], averaged over N unlabeled inputs x. By default
  (`labels="sample"`) y is sampled from the model's own predictive distribution, `samples` draws per input (the
  paper's estimator); `labels="exact"` instead takes the expectation over all C classes,
  sum_y p(y|x) (d log p(y|x) / d theta)^2 (what the authors' reference code computes), C times the cost.
  Per-example gradients come from `torch.func.vmap(torch.func.grad(...))` over chunks of `batch_size` inputs (the
  square of a summed batch gradient would not be the Fisher); only the named parameters are differentiated.
- `fisher_merge` / `fisher_merge_iter`: theta* = sum_i lambda_i F_i theta_i / sum_i lambda_i F_i elementwise,
  streaming one tensor at a time. Each F_i is floored at `floor` (1e-6, the reference code's `fisher_floor`) so
  that no entry divides 0 by 0. Tensors without a Fisher (task heads, integer buffers, `exclude` patterns) are
  not merged: they are copied from the first model (task heads stay per task: merge backbones only).

Deviations and choices: `normalize=True` (the reference code's default `normalize_fishers`, not stated in the
paper) divides each lambda_i by the L2 norm of model i's whole Fisher, so that a model whose Fisher is larger
overall (less confident predictions) does not dominate the merge; `normalize=False` gives the formula above as
written. The floor is applied to every model's Fisher (the reference code floors only the "target" model's when
favoring it; our merge has no target model). The model is evaluated in eval mode (no dropout) while estimating.
"""

import fnmatch
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from paperzoo.core.errors import ConfigError, require
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible

__all__ = ["FISHER_FLOOR", "diagonal_fisher", "fisher_merge", "fisher_merge_iter", "fisher_norm"]

FISHER_FLOOR = 1e-6  # the reference code's fisher_floor

Labels = Literal["sample", "exact"]


def diagonal_fisher(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    names: Iterable[str] | None = None,
    labels: Labels = "sample",
    samples: int = 1,
    batch_size: int = 64,
    seed: int = 0,
) -> StateDict:
    """Diagonal Fisher of a classifier on unlabeled `inputs`, labels sampled from the model (or the exact expectation).

    Args:
        model: a classifier; `model(x)` maps a batch [B, ...] to logits [B, C].
        inputs: N unlabeled examples [N, ...].
        names: the parameters to estimate (default: every parameter); the others are held fixed.
        labels: "sample" draws y ~ p(y|x) `samples` times per input; "exact" sums over all classes weighted by p.
        samples: label draws per input for "sample".
        batch_size: inputs per chunk, and (input, label) rows per vmapped call (memory: batch_size x the
            parameters' size).
        seed: seeds the label sampling (a CPU generator, so results do not depend on the device).

    Returns:
        name -> F (same shape as the parameter, float32), the mean over inputs (and draws) of squared gradients.
    """
    require(labels in ("sample", "exact"), f"labels={labels!r} is not 'sample' or 'exact'.")
    require(samples >= 1, f"samples={samples} is not positive; expected at least one label draw per input.")
    require(batch_size >= 1, f"batch_size={batch_size} is not positive.")
    require(inputs.shape[0] >= 1, "No inputs to estimate the Fisher on; expected at least one.")
    parameters = dict(model.named_parameters())
    chosen = list(parameters) if names is None else list(names)
    for name in chosen:
        if name not in parameters:
            raise ConfigError(f"Parameter {name!r} is not in the model; expected one of {', '.join(parameters)}.")
    require(len(chosen) > 0, "No parameters named; expected at least one to estimate the Fisher of.")
    trained = {n: parameters[n].detach() for n in chosen}
    fixed = {n: p.detach() for n, p in parameters.items() if n not in trained}
    fixed.update({n: b.detach() for n, b in model.named_buffers()})

    def log_prob(params: StateDict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = forward_with(params, x.unsqueeze(0))  # [1, C]
        # gather, not [0, y]: indexing with a vmapped label would need .item()
        return torch.log_softmax(logits, dim=-1)[0].gather(0, y.reshape(1)).squeeze(0)

    def forward_with(params: StateDict, x: torch.Tensor) -> torch.Tensor:
        # functional_call swaps the tensors in for this call only; forward's own code runs unchanged
        return functional_call(model, {**fixed, **params}, (x,), strict=False, tie_weights=True)  # type: ignore[arg-type]

    per_example = vmap(grad(log_prob), in_dims=(None, 0, 0))  # -> name -> [B, *shape]
    totals = {n: torch.zeros_like(t, dtype=torch.float32) for n, t in trained.items()}
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size]  # [B, ...]
            with torch.no_grad():
                probs = torch.softmax(model(x).float(), dim=-1)  # [B, C]
            # one (input, label, weight) row per term of the estimate, vmapped in chunks of batch_size rows
            if labels == "sample":
                draws = torch.multinomial(probs.cpu(), samples, replacement=True, generator=generator)  # [B, S]
                rows_x = x.repeat_interleave(samples, dim=0)  # [B * S, ...]
                rows_y = draws.reshape(-1).to(x.device)  # [B * S]
                rows_w = torch.full(rows_y.shape, 1.0 / samples, device=x.device)
            else:
                classes = probs.shape[1]
                rows_x = x.repeat_interleave(classes, dim=0)  # [B * C, ...]
                rows_y = torch.arange(classes, device=x.device).repeat(x.shape[0])  # [B * C]
                rows_w = probs.reshape(-1)  # p(y|x) of each row
            for row in range(0, rows_y.shape[0], batch_size):
                part = slice(row, row + batch_size)
                grads = per_example(trained, rows_x[part], rows_y[part])  # name -> [R, *shape]
                for n, g in grads.items():
                    g2 = g.detach().float().pow(2)
                    totals[n] += (rows_w[part].reshape(-1, *([1] * (g2.dim() - 1))) * g2).sum(dim=0)
    finally:
        model.train(was_training)
    return {n: t / inputs.shape[0] for n, t in totals.items()}


def fisher_norm(fisher: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of a whole diagonal Fisher (over all its tensors), read one tensor at a time."""
    return math.sqrt(sum(float(fisher[n].double().pow(2).sum()) for n in fisher))


def _weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    require(len(weights) == count, f"{len(weights)} weights given for {count} models; expected one per model.")
    values = [float(w) for w in weights]
    require(all(w >= 0 and math.isfinite(w) for w in values) and sum(values) > 0, f"weights {values} must be >= 0 "
            "and finite with a positive sum.")  # fmt: skip
    return values


def fisher_merge_iter(
    models: Sequence[Mapping[str, torch.Tensor]],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    *,
    weights: Sequence[float] | None = None,
    floor: float = FISHER_FLOOR,
    normalize: bool = True,
    exclude: Sequence[str] = (),
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(name, merged tensor)` of the Fisher-weighted merge, one tensor at a time (see `fisher_merge`)."""
    require(len(models) >= 1, "No models to merge; expected at least one.")
    require(len(fishers) == len(models), f"{len(fishers)} Fishers given for {len(models)} models; expected one each.")
    require(floor > 0 and math.isfinite(floor), f"floor={floor} is not a positive number.")
    if isinstance(exclude, str):
        exclude = (exclude,)
    lam = _weights(weights, len(models))
    first = models[0]
    check_compatible(first, models[1:])
    if normalize:
        norms = [fisher_norm(f) for f in fishers]
        for i, norm in enumerate(norms):
            require(norm > 0, f"The Fisher of model {i} is all zero; it cannot be normalized (use normalize=False).")
        lam = [w / norm for w, norm in zip(lam, norms, strict=True)]
    with torch.no_grad():
        for name, tensor in first.items():
            merged_here = tensor.is_floating_point() and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
            if merged_here and name in fishers[0]:
                numerator = torch.zeros(tensor.shape, dtype=torch.float32, device=tensor.device)
                denominator = torch.zeros_like(numerator)
                for i, (model, fisher) in enumerate(zip(models, fishers, strict=True)):
                    if name not in fisher:
                        raise ConfigError(f"Fisher {i} has no tensor {name!r} that Fisher 0 has; expected the same.")
                    f = fisher[name].to(device=tensor.device, dtype=torch.float32)
                    if tuple(f.shape) != tuple(tensor.shape):
                        raise ConfigError(
                            f"Fisher {i} of {name!r} has shape {tuple(f.shape)}; expected {tuple(tensor.shape)}."
                        )
                    weighted = lam[i] * f.clamp_min(floor)  # lambda_i F_i, floored
                    numerator += weighted * model[name].to(device=tensor.device, dtype=torch.float32)
                    denominator += weighted
                yield name, (numerator / denominator).to(tensor.dtype)
            else:
                yield name, tensor.detach().clone()


def fisher_merge(
    models: Sequence[Mapping[str, torch.Tensor]],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    *,
    weights: Sequence[float] | None = None,
    floor: float = FISHER_FLOOR,
    normalize: bool = True,
    exclude: Sequence[str] = (),
) -> StateDict:
    """Fisher-weighted average theta* = sum_i lambda_i F_i theta_i / sum_i lambda_i F_i (elementwise).

    Args:
        models: the K state dicts to merge (same names and shapes); inputs are never mutated.
        fishers: one diagonal Fisher per model (`diagonal_fisher`), name -> tensor of the parameter's shape. Names
            in the models but not in Fisher 0 are copied from model 0 (task heads stay per task).
        weights: lambda_i per model (default 1 each), >= 0 with a positive sum.
        floor: each F_i is clamped to at least this (the paper's epsilon).
        normalize: divide lambda_i by the L2 norm of F_i (the reference code's default).
        exclude: fnmatch patterns of names copied from model 0 unchanged.

    Returns:
        The merged state dict, in model 0's dtypes.
    """
    return dict(fisher_merge_iter(models, fishers, weights=weights, floor=floor, normalize=normalize, exclude=exclude))
